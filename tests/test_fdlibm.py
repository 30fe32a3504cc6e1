"""core.fdlibm.exp returns exactly what Spark SQL's exp (StrictMath) returns."""

import numpy as np

from sparkml_aiaas.core.fdlibm import exp

EDGES = [0.0, -0.0, 1e-300, -1e-300, 2.0**-28, -(2.0**-28), 0.34657359, 0.3465736, 1.0397,
         -1.0397, 709.78, 709.79, -745.13, -745.14, -708.5, -720.0, -740.0, 1e308, -1e308,
         float("inf"), float("-inf"), float("nan")]


def test_exp_is_bit_identical_to_spark_sql(spark):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-40, 40, 20_000), rng.standard_normal(10_000) * 3,
                        rng.uniform(-745, 710, 10_000), np.array(EDGES)])
    frame = spark.createDataFrame([(float(v),) for v in x], "x double")
    from_spark = np.array([row[0] for row in frame.selectExpr("exp(x)").collect()])
    ours = exp(x)
    same = (from_spark == ours) | (np.isnan(from_spark) & np.isnan(ours))
    assert same.all(), x[~same][:5]
    # numpy's exp is not fdlibm's: it rounds differently for some of these inputs.
    assert (np.exp(x[:20_000]) != from_spark[:20_000]).any()


def test_exp_shapes_and_scalars():
    assert exp(0.0).shape == (1,) and exp(0.0)[0] == 1.0
    grid = np.linspace(-3, 3, 12).reshape(3, 4)
    assert exp(grid).shape == (3, 4)
    np.testing.assert_allclose(exp(grid), np.exp(grid), rtol=1e-15)


def test_exp_scalar_is_bit_identical_to_exp():
    # The served single record's exp: Python floats, the same bits as the vectorised port
    # (itself checked against Spark above) -- random doubles, random bit patterns, the
    # edges, and the doubles either side of every threshold fdlibm branches on.
    from sparkml_aiaas.core.fdlibm import exp_scalar

    rng = np.random.default_rng(1)
    thresholds = [float.fromhex(h) for h in ("0x1.62e42p+9", "0x1.62e43p-2", "0x1.0a2b2p+0",
                                             "0x1p-28")] + [709.782712893384, -745.1332191019411]
    around = [np.nextafter(t, s * np.inf) * sign for t in thresholds for s in (-1, 1)
              for sign in (1, -1)] + [t * sign for t in thresholds for sign in (1, -1)]
    x = np.concatenate([rng.uniform(-40, 40, 50_000), rng.uniform(-746, 710, 50_000),
                        rng.integers(0, 2**64, 50_000, dtype=np.uint64).view(np.float64),
                        np.array(EDGES + around + [5e-324, -5e-324])])
    ours = np.array([exp_scalar(float(v)) for v in x])
    vectorised = exp(x)
    same = (ours.view(np.uint64) == vectorised.view(np.uint64)) | (np.isnan(ours)
                                                                   & np.isnan(vectorised))
    assert same.all(), x[~same][:5]
