"""Fitted preprocessing: core math vs scikit-learn, Spark == pandas, persistence, PII stage."""

import glob
import hashlib
import hmac
import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from sparkml_aiaas.core.pii import key_id
from sparkml_aiaas.core.preprocessing import (FittedPreprocessor, PreprocessSpec, category_key,
                                              fit_from_pandas, hash_index)
from sparkml_aiaas.errors import ConfigError, DataValidationError, ModelFormatError

KEY = "k" * 8 + "0123456789abcdef"  # 24 bytes: above pii.MIN_KEY_BYTES


def _numeric_frame(seed=0, n=60):
    rng = np.random.default_rng(seed)
    a = rng.normal(3.0, 2.0, n)
    b = rng.integers(0, 5, n).astype(float)  # ties: exercises mode and quantiles
    c = np.full(n, 0.1 + 0.2)  # constant with an inexact value: zero spread
    a[[1, 7, 20]] = np.nan
    b[[3, 4]] = np.nan
    return pd.DataFrame({"a": a, "b": b, "c": c})


# --------------------------------------------------------------------------------------------
# Core math vs scikit-learn (no Spark)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_imputer_matches_sklearn(strategy):
    pdf = _numeric_frame()
    spec = PreprocessSpec(numeric_cols=["a", "b", "c"], impute_strategy=strategy,
                          impute_fill_value=-7.5)
    ours = fit_from_pandas(pdf, spec).transform_frame(pdf)
    ref = SimpleImputer(strategy=strategy, fill_value=-7.5).fit_transform(pdf.to_numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scaling, reference", [
    ("standard", StandardScaler()),
    ("minmax", MinMaxScaler()),
    ("robust", RobustScaler()),
])
def test_scalers_match_sklearn(scaling, reference):
    pdf = _numeric_frame().fillna(1.25)
    spec = PreprocessSpec(numeric_cols=["a", "b", "c"], scaling=scaling)
    ours = fit_from_pandas(pdf, spec).transform_frame(pdf)
    ref = reference.fit_transform(pdf.to_numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert np.abs(ours[:, 2]).max() < 1e-15  # constant column -> ~0 (mean rounding), not 1e16


@pytest.mark.parametrize("with_mean, with_std", [(True, False), (False, True)])
def test_standard_flags_match_sklearn(with_mean, with_std):
    pdf = _numeric_frame().fillna(0.0)
    spec = PreprocessSpec(numeric_cols=["a", "b"], scaling="standard", with_mean=with_mean,
                          with_std=with_std)
    ours = fit_from_pandas(pdf, spec).transform_frame(pdf)
    ref = StandardScaler(with_mean=with_mean, with_std=with_std).fit_transform(
        pdf[["a", "b"]].to_numpy())
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_scaler_statistics_ignore_missing_values_like_sklearn():
    # Documented choice: scaler stats over observed values, then imputed values are scaled.
    pdf = _numeric_frame()
    spec = PreprocessSpec(numeric_cols=["a", "b"], impute_strategy="median", scaling="standard")
    ours = fit_from_pandas(pdf, spec).transform_frame(pdf)
    x = pdf[["a", "b"]].to_numpy()
    ref = StandardScaler().fit(x).transform(SimpleImputer(strategy="median").fit_transform(x))
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def _city_frames():
    train = pd.DataFrame({"city": ["Paris"] * 3 + ["Berlin"] * 3 + ["Rome"] * 5 + ["Oslo"]})
    test = pd.DataFrame({"city": ["Rome", "Lima", "Oslo", "Paris", "Berlin", "Lima"]})
    return train, test


def test_category_order_is_frequency_then_value():
    train, _ = _city_frames()
    fitted = fit_from_pandas(train, PreprocessSpec(categorical_cols=["city"]))
    assert fitted.feature_names == ["city=Rome", "city=Berlin", "city=Paris", "city=Oslo"]


def test_onehot_zero_matches_sklearn_ignore():
    train, test = _city_frames()
    fitted = fit_from_pandas(train, PreprocessSpec(categorical_cols=["city"], handle_unseen="zero"))
    categories = [n.split("=", 1)[1] for n in fitted.feature_names]
    ref = OneHotEncoder(categories=[categories], handle_unknown="ignore", sparse_output=False)
    ref.fit(train.to_numpy())
    np.testing.assert_array_equal(fitted.transform_frame(test), ref.transform(test.to_numpy()))
    assert not fitted.transform_frame(test)[1].any()


def test_onehot_error_names_column_and_value():
    train, test = _city_frames()
    fitted = fit_from_pandas(train, PreprocessSpec(categorical_cols=["city"]))
    with pytest.raises(DataValidationError, match=r"column 'city' has value 'Lima'"):
        fitted.transform_frame(test)
    ref = OneHotEncoder(handle_unknown="error").fit(train.to_numpy())
    with pytest.raises(ValueError):
        ref.transform(test.to_numpy())


def test_onehot_keep_uses_unknown_slot():
    train, test = _city_frames()
    fitted = fit_from_pandas(train, PreprocessSpec(categorical_cols=["city"], handle_unseen="keep"))
    assert fitted.feature_names[-1] == "city=__unknown__"
    X = fitted.transform_frame(test)
    zero = fit_from_pandas(train, PreprocessSpec(categorical_cols=["city"], handle_unseen="zero"))
    np.testing.assert_array_equal(X[:, :-1], zero.transform_frame(test))
    np.testing.assert_array_equal(X[:, -1], (test["city"] == "Lima").to_numpy(float))
    assert np.all(X.sum(axis=1) == 1.0)


def test_max_categories():
    train, _ = _city_frames()
    with pytest.raises(ConfigError, match=r"maxCategories=2 would drop 2 .*'city'"):
        fit_from_pandas(train, PreprocessSpec(categorical_cols=["city"], max_categories=2))
    fitted = fit_from_pandas(train, PreprocessSpec(categorical_cols=["city"], max_categories=2,
                                                   handle_unseen="keep"))
    assert fitted.feature_names == ["city=Rome", "city=Berlin", "city=__unknown__"]
    np.testing.assert_array_equal(fitted.transform_frame(train).sum(axis=0), [5, 3, 4])


def test_null_is_a_category_when_seen_and_unseen_otherwise():
    train = pd.DataFrame({"c": ["x", None, "y", None, "x", np.nan]})
    fitted = fit_from_pandas(train, PreprocessSpec(categorical_cols=["c"]))
    assert fitted.feature_names == ["c=__null__", "c=x", "c=y"]  # null seen 3 times
    np.testing.assert_array_equal(fitted.transform_frame(pd.DataFrame({"c": [None]})), [[1, 0, 0]])
    no_null = fit_from_pandas(pd.DataFrame({"c": ["x", "y"]}), PreprocessSpec(categorical_cols=["c"]))
    with pytest.raises(DataValidationError, match=r"column 'c' has value null"):
        no_null.transform_frame(pd.DataFrame({"c": ["x", None]}))


def test_integer_categories_survive_float_promotion():
    # An integer column with nulls reaches a pandas UDF as float64.
    fitted = fit_from_pandas(pd.DataFrame({"k": [3, 3, 7]}), PreprocessSpec(categorical_cols=["k"]))
    as_float = pd.DataFrame({"k": [3.0, 7.0]})
    np.testing.assert_array_equal(fitted.transform_frame(as_float), [[1, 0], [0, 1]])
    assert [category_key(v) for v in (True, 2.5, np.int64(4), np.nan)] == ["true", "2.5", "4", None]


def test_log_and_clip():
    pdf = pd.DataFrame({"x": [-3.0, 0.0, 1.0, 9.0], "y": [1.0, 2.0, 3.0, 4.0]})
    with pytest.raises(DataValidationError, match=r"column 'x' .*negative values \(min -3.0\)"):
        fit_from_pandas(pdf, PreprocessSpec(numeric_cols=["x"], log_cols=["x"]))
    spec = PreprocessSpec(numeric_cols=["x", "y"], log_cols=["x"],
                          clip_bounds={"x": (0, None), "y": (None, 2.5)})
    fitted = fit_from_pandas(pdf, spec)
    X = fitted.transform_frame(pdf)
    np.testing.assert_array_equal(X[:, 0], np.log1p([0.0, 0.0, 1.0, 9.0]))
    np.testing.assert_array_equal(X[:, 1], [1.0, 2.0, 2.5, 2.5])
    unclipped = fit_from_pandas(pdf.iloc[1:], PreprocessSpec(numeric_cols=["x"], log_cols=["x"]))
    with pytest.raises(DataValidationError, match=r"column 'x' is log-transformed .*-3.0"):
        unclipped.transform_frame(pdf)


def test_hashing_accumulates_and_ignores_nulls():
    pdf = pd.DataFrame({"u": ["a", "b", None], "v": ["a", None, None]})
    fitted = fit_from_pandas(pdf, PreprocessSpec(hashed_cols=["u", "v"], num_hash_features=1))
    np.testing.assert_array_equal(fitted.transform_frame(pdf), [[2.0], [1.0], [0.0]])
    assert fitted.feature_names == ["hash[0]"]
    assert hash_index("u", "a", 16) == hash_index("u", "a", 1 << 18) % 16


def test_round_trip_is_exact_through_json():
    pdf = _numeric_frame().assign(city=["p", "q", None] * 20, h=list("abcdef") * 10)
    spec = PreprocessSpec(numeric_cols=["a", "b", "c"], categorical_cols=["city"],
                          hashed_cols=["h"], num_hash_features=7, scaling="robust",
                          impute_strategy="mean", clip_bounds={"a": (-1.0 / 3.0, None)},
                          handle_unseen="keep")
    fitted = fit_from_pandas(pdf, spec)
    again = FittedPreprocessor.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted
    assert np.array_equal(again.transform_frame(pdf), fitted.transform_frame(pdf))
    assert again.feature_names[:3] == ["a", "b", "c"] and "city=__null__" in again.feature_names
    with pytest.raises(ModelFormatError):
        FittedPreprocessor.from_dict({"format": "something else"})


@pytest.mark.parametrize("kwargs, message", [
    ({"numeric_cols": ["a"], "impute_strategy": "avg"}, r"imputeStrategy is 'avg'"),
    ({"numeric_cols": ["a"], "scaling": "zscore"}, r"scaling is 'zscore'"),
    ({"categorical_cols": ["a"], "handle_unseen": "skip"}, r"handleUnseen is 'skip'"),
    ({"numeric_cols": ["a"], "log_cols": ["b"]}, r"logCols names column 'b'"),
    ({"numeric_cols": ["a"], "clip_bounds": {"a": (2, 1)}}, r"'a': lower 2.0 > upper 1.0"),
    ({"numeric_cols": ["a"], "categorical_cols": ["a"]}, r"'a' is listed in both"),
    ({"hashed_cols": ["a"], "num_hash_features": 0}, r"numHashFeatures"),
    ({}, r"nothing to preprocess"),
])
def test_bad_spec_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PreprocessSpec(**kwargs)


def test_bad_data_names_the_column():
    spec = PreprocessSpec(numeric_cols=["a", "zz"])
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['zz'\]"):
        fit_from_pandas(pd.DataFrame({"a": [1.0]}), spec)
    with pytest.raises(DataValidationError, match=r"numeric column 'a' holds non-numeric"):
        fit_from_pandas(pd.DataFrame({"a": ["x"], "zz": [1.0]}), spec)
    with pytest.raises(DataValidationError, match=r"column 'a' has no non-missing values"):
        fit_from_pandas(pd.DataFrame({"a": [np.nan], "zz": [1.0]}), spec)
    strict = fit_from_pandas(pd.DataFrame({"a": [1.0]}),
                             PreprocessSpec(numeric_cols=["a"], impute_strategy="none"))
    with pytest.raises(DataValidationError, match=r"column 'a' has 1 missing value"):
        strict.transform_frame(pd.DataFrame({"a": [np.nan]}))


def test_empty_input():
    spec = PreprocessSpec(numeric_cols=["a"], categorical_cols=["c"])
    empty = pd.DataFrame({"a": pd.Series([], dtype=float), "c": pd.Series([], dtype=object)})
    with pytest.raises(DataValidationError, match="empty dataset"):
        fit_from_pandas(empty, spec)
    fitted = fit_from_pandas(pd.DataFrame({"a": [1.0], "c": ["x"]}), spec)
    assert fitted.transform_frame(empty).shape == (0, 2)


# --------------------------------------------------------------------------------------------
# Spark layer
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(7)
    n = 40
    frame = pd.DataFrame({
        "id": np.arange(n),
        "age": rng.normal(40, 12, n).round(1),
        "income": rng.lognormal(10, 1, n),
        "visits": rng.integers(0, 6, n).astype("float64"),
        "city": rng.choice(["Paris", "Berlin", "Rome", "Zürich"], n),
        "device": rng.choice(["ios", "android", "web"], n),
        "ref": [f"r{i % 9}" for i in range(n)],
    })
    frame.loc[[2, 11], "age"] = np.nan
    frame.loc[5, "visits"] = np.nan
    frame.loc[[3, 8], "city"] = None
    return frame


def _estimator(**overrides):
    from sparkml_aiaas.preprocessing import Preprocessor

    params = dict(numericCols=["age", "income", "visits"], categoricalCols=["city", "device"],
                  hashedCols=["ref"], numHashFeatures=16, imputeStrategy="median",
                  scaling="robust", logCols=["income"], clipBounds={"age": [18, 65]},
                  handleUnseen="keep")
    params.update(overrides)
    return Preprocessor(**params)


@pytest.fixture(scope="module")
def model(df):
    return _estimator().fit(df)


def _features(frame, col="features"):
    rows = frame.orderBy("id").select(col).collect()
    return np.array([r[0].toArray() for r in rows])


def test_spark_transform_equals_transform_frame_exactly(model, df, pdf):
    out = model.transform(df)
    assert out.columns == list(pdf.columns) + ["features"]
    X = _features(out)
    assert np.array_equal(X, model.fitted.transform_frame(pdf))
    # Spark's statistics equal numpy's (one aggregation + groupBys vs fit_from_pandas).
    reference = fit_from_pandas(pdf, _estimator().spec())
    assert reference.feature_names == model.featureNames
    np.testing.assert_allclose(X, reference.transform_frame(pdf), rtol=1e-12, atol=1e-12)
    meta = out.schema["features"].metadata["ml_attr"]
    assert meta["num_attrs"] == model.numFeatures == X.shape[1]
    assert [a["name"] for a in meta["attrs"]["numeric"]] == model.featureNames


@pytest.mark.parametrize("scaling, strategy", [("standard", "mean"), ("minmax", "most_frequent")])
def test_spark_statistics_match_numpy(df, pdf, scaling, strategy):
    # Categories are covered by the model fixture; numeric statistics only here.
    m = _estimator(scaling=scaling, imputeStrategy=strategy, categoricalCols=[],
                   hashedCols=[]).fit(df)
    reference = fit_from_pandas(pdf, m.spec())
    np.testing.assert_allclose(m.fitted.transform_frame(pdf), reference.transform_frame(pdf),
                               rtol=1e-12, atol=1e-12)


def test_hash_indices_equal_spark_feature_hasher(spark):
    from pyspark.ml.feature import FeatureHasher
    from sparkml_aiaas.preprocessing import Preprocessor

    words = ["a", "ab", "abc", "abcd", "abcde", "Zürich", "東京", "", None]
    frame = spark.createDataFrame([(i, w, i % 3 == 0) for i, w in enumerate(words)],
                                  "id long, w string, flag boolean")
    ours = Preprocessor(hashedCols=["w", "flag"], numHashFeatures=64).fit(frame).transform(frame)
    theirs = FeatureHasher(inputCols=["w", "flag"], numFeatures=64,
                           outputCol="spark").transform(frame)
    assert np.array_equal(_features(ours), _features(theirs, "spark"))


def test_save_load_spark_and_spark_free(model, df, pdf, tmp_path):
    from sparkml_aiaas.preprocessing import PreprocessorModel, load_fitted

    path = str(tmp_path / "pre")
    model.save(path)
    loaded = PreprocessorModel.load(path)
    assert loaded.uid == model.uid and loaded.getOutputCol() == "features"
    assert np.array_equal(_features(loaded.transform(df)), _features(model.transform(df)))
    fitted = load_fitted(path)
    assert fitted == model.fitted
    assert np.array_equal(fitted.transform_frame(pdf), model.fitted.transform_frame(pdf))
    with open(os.path.join(path, "arrays.npz"), "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelFormatError, match="checksum mismatch"):
        load_fitted(path)


def test_pipeline_save_load(df, pdf, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from sparkml_aiaas.preprocessing import load_fitted

    pipeline = Pipeline(stages=[_estimator(outputCol="x")])
    pipeline.write().save(str(tmp_path / "unfitted"))
    fitted = Pipeline.load(str(tmp_path / "unfitted")).fit(df)
    path = str(tmp_path / "pm")
    fitted.write().save(path)
    loaded = PipelineModel.load(path)
    assert np.array_equal(_features(loaded.transform(df), "x"), _features(fitted.transform(df), "x"))
    assert np.array_equal(load_fitted(path).transform_frame(pdf),
                          fitted.stages[0].fitted.transform_frame(pdf))


def test_spark_errors(spark, df, model):
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['nope'\]"):
        _estimator(numericCols=["age", "nope"], logCols=[], clipBounds={}).fit(df)
    with pytest.raises(DataValidationError, match=r"numeric column 'city' has type string"):
        _estimator(numericCols=["city"], categoricalCols=["device"], logCols=[],
                   clipBounds={}).fit(df)
    with pytest.raises(ConfigError, match=r"scaling is 'zscore'"):
        _estimator(scaling="zscore").fit(df)
    with pytest.raises(DataValidationError, match=r"column 'age' .*negative values"):
        _estimator(logCols=["age"], clipBounds={}).fit(
            df.withColumn("age", df["age"] - 100))
    with pytest.raises(TypeError, match="clipBounds"):
        _estimator(clipBounds={"age": [0, float("inf")]})
    with pytest.raises(DataValidationError, match="empty dataset"):
        _estimator().fit(df.limit(0))
    assert model.transform(df.limit(0)).count() == 0
    with pytest.raises(DataValidationError, match="'features' already exists"):
        model.transform(model.transform(df))


def test_spark_unseen_error_policy(spark, df):
    strict = _estimator(handleUnseen="error", categoricalCols=["device"]).fit(df)
    bad = df.limit(3).withColumn("device", df["device"].substr(1, 1))
    with pytest.raises(Exception, match=r"column 'device' has value"):
        strict.transform(bad).collect()


# --------------------------------------------------------------------------------------------
# Deidentifier
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def pii_df(spark):
    rows = [(1, "alice@example.com", "123-45-6789", 4151234567, 1.5),
            (2, "bob@example.com", "987-65-4321", None, 2.5),
            (3, None, "555-55-5555", 4159999999, 3.5)]
    return spark.createDataFrame(rows, "id long, email string, ssn string, phone long, x double")


def _hmac(value):
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def test_deidentifier_hashes_and_drops(pii_df, monkeypatch, tmp_path):
    from sparkml_aiaas.preprocessing import Deidentifier

    monkeypatch.setenv("TEST_PII_KEY", KEY)
    stage = Deidentifier(dropCols=["ssn"], hashCols=["email", "phone"], keyEnv="TEST_PII_KEY")
    out = stage.transform(pii_df)
    assert out.columns == ["id", "email", "phone", "x"]
    rows = out.orderBy("id").collect()
    assert [r.email for r in rows] == [_hmac("alice@example.com"), _hmac("bob@example.com"), None]
    assert [r.phone for r in rows] == [_hmac("4151234567"), None, _hmac("4159999999")]
    assert KEY not in out._jdf.queryExecution().toString()

    target = str(tmp_path / "out")
    out.write.option("compression", "none").parquet(target)
    saved = str(tmp_path / "stage")
    stage.save(saved)
    written = b"".join(open(p, "rb").read() for p in glob.glob(target + "/**", recursive=True)
                       + glob.glob(saved + "/**", recursive=True) if os.path.isfile(p))
    assert _hmac("alice@example.com").encode() in written  # the scan does see the values
    for raw in ("alice@example.com", "bob@example", "123-45-6789", "4151234567", KEY):
        assert raw.encode() not in written
    assert json.load(open(os.path.join(saved, "metadata.json")))["paramMap"]["keyId"] == \
        key_id(KEY.encode())


def test_deidentifier_key_checks(pii_df, monkeypatch, tmp_path):
    from pyspark.ml import PipelineModel
    from sparkml_aiaas.preprocessing import Deidentifier

    monkeypatch.delenv("SPARKML_AIAAS_PII_KEY", raising=False)
    with pytest.raises(ConfigError, match="SPARKML_AIAAS_PII_KEY"):
        Deidentifier(hashCols=["email"]).transform(pii_df)
    # Dropping alone needs no key.
    assert "ssn" not in Deidentifier(dropCols=["ssn"]).transform(pii_df).columns
    with pytest.raises(DataValidationError, match=r"\['nope'\]"):
        Deidentifier(dropCols=["nope"]).transform(pii_df)

    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    stage = Deidentifier(hashCols=["email"], keyFile=str(key_file))
    path = str(tmp_path / "pm")
    PipelineModel(stages=[stage]).save(path)
    loaded = PipelineModel.load(path)
    assert loaded.transform(pii_df).orderBy("id").first().email == _hmac("alice@example.com")
    key_file.write_text("another-key-of-enough-length")
    with pytest.raises(ConfigError, match=r"was saved with key id " + key_id(KEY.encode())):
        PipelineModel.load(path)
    with pytest.raises(ConfigError, match="saved with key id"):
        loaded.stages[0].transform(pii_df)
