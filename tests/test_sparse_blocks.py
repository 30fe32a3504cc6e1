"""Sparse (CSR) training blocks: the kernels on scipy.sparse vs dense numpy, the block files,
the Arrow decoding of VectorUDT structs, and estimator fits on SparseVector DataFrames."""

import os
import pickle

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp
from pyspark.ml.linalg import DenseVector, SparseVector, Vectors
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import sparkml_aiaas.core.losses as losses_module
from sparkml_aiaas.core.glm import fit_glm
from sparkml_aiaas.core.losses import LOSSES, get_loss, loss_gradient_sums
from sparkml_aiaas.core.matrices import row_slice, take_rows
from sparkml_aiaas.core.stats import block_stats, merge_stats
from sparkml_aiaas.core.stochastic import RoundSpec, local_round, sample_rows
from sparkml_aiaas.engine import FeatureSpec, ResidentBlocks
from sparkml_aiaas.engine import block_files
from sparkml_aiaas.engine.block_rows import BlockOptions, _vector_batch_to_numpy, write_block
from sparkml_aiaas.engine.loop import DistributedDataPass
from sparkml_aiaas.errors import ConfigError, DataValidationError
from sparkml_aiaas.models import LinearRegression, LinearSVC, LogisticRegression
from sparkml_aiaas.models.linear import LogisticRegressionModel

ALL_LOSSES = sorted(LOSSES)


# --------------------------------------------------------------------------- helpers
def _sparse_matrix(n, d, density, seed, dtype=np.float64):
    """A CSR matrix with explicit zeros, empty rows and a constant column (all edge cases)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed,
                  data_rvs=lambda k: rng.normal(scale=2.0, size=k)).astype(dtype)
    X = X.tolil()
    X[0, :] = 0.0  # an empty row
    X[3, 1] = 0.0
    X = X.tocsr()
    X.data[::7] = 0.0  # explicit zeros stay stored
    return X


def _labels(loss, n, k, rng):
    if loss.label_domain == "binary":
        return (rng.uniform(size=n) < 0.4).astype(float)
    if loss.label_domain == "class_index":
        return rng.integers(0, k, size=n).astype(float)
    return rng.normal(size=n) * 2.0


def _setup(loss_name, n=900, d=30, seed=0):
    rng = np.random.default_rng(seed)
    loss = get_loss(loss_name)
    k = 3 if loss_name == "multinomial" else 1
    X = _sparse_matrix(n, d, 0.08, seed)
    y = _labels(loss, n, k, rng)
    w = rng.uniform(0.1, 3.0, size=n)
    coef = rng.normal(scale=0.5, size=(d, k))
    intercept = rng.normal(size=k)
    extra = np.array([0.2]) if loss.n_extra else None
    return loss, X, y, w, coef, intercept, extra


def assert_sums_equal(a, b, rtol=1e-10):
    assert a.count == b.count
    assert a.weight == pytest.approx(b.weight, rel=1e-14)
    assert a.loss == pytest.approx(b.loss, rel=rtol)
    scale = np.abs(b.grad).max()
    np.testing.assert_allclose(a.grad, b.grad, rtol=0, atol=rtol * scale)
    if b.hessian is not None:
        np.testing.assert_allclose(a.hessian, b.hessian, rtol=0,
                                   atol=rtol * np.abs(b.hessian).max())


# --------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("loss_name", ALL_LOSSES)
@pytest.mark.parametrize("chunk_bytes", [None, 1 << 10])  # one chunk, many chunks
def test_loss_sums_on_csr_equal_dense(loss_name, chunk_bytes, monkeypatch):
    if chunk_bytes is not None:
        monkeypatch.setattr(losses_module, "CHUNK_BYTES", chunk_bytes)
    loss, X, y, w, coef, intercept, extra = _setup(loss_name)
    with_hessian = loss.curvature is not None
    sparse = loss_gradient_sums(loss, X, y, w, coef, intercept, extra, with_hessian=with_hessian)
    dense = loss_gradient_sums(loss, X.toarray(), y, w, coef, intercept, extra,
                               with_hessian=with_hessian)
    assert_sums_equal(sparse, dense)
    if with_hessian:
        assert sparse.hessian.shape == (loss.n_params(X.shape[1], coef.shape[1]),) * 2


def test_many_chunks_equal_one_chunk_on_csr(monkeypatch):
    loss, X, y, w, coef, intercept, _ = _setup("logistic", n=3000)
    whole = loss_gradient_sums(loss, X, y, w, coef, intercept, with_hessian=True)
    monkeypatch.setattr(losses_module, "CHUNK_BYTES", 1 << 10)
    assert losses_module._rows_per_chunk(X, 1) < X.shape[0]  # really chunked
    chunked = loss_gradient_sums(loss, X, y, w, coef, intercept, with_hessian=True)
    assert_sums_equal(chunked, whole, rtol=1e-12)


def test_hinge_has_no_hessian_on_csr_either():
    loss, X, y, w, coef, intercept, _ = _setup("hinge")
    with pytest.raises(ValueError, match="Newton's method does not support the hinge"):
        loss_gradient_sums(loss, X, y, w, coef, intercept, with_hessian=True)


def test_empty_csr_block():
    loss = LOSSES["logistic"]
    X = sp.csr_matrix((0, 4))
    sums = loss_gradient_sums(loss, X, np.empty(0), np.empty(0), np.zeros((4, 1)), np.zeros(1))
    assert sums.count == 0 and sums.weight == 0.0 and sums.grad.shape == (5,)


def test_row_slice_and_take_rows_do_not_densify():
    X = _sparse_matrix(50, 8, 0.2, 3)
    part = row_slice(X, 10, 30)
    assert sp.issparse(part) and part.shape == (20, 8)
    assert np.shares_memory(part.data, X.data) and np.shares_memory(part.indices, X.indices)
    np.testing.assert_array_equal(part.toarray(), X.toarray()[10:30])
    rows = np.array([4, 0, 49, 4])
    taken = take_rows(X, rows)
    assert sp.issparse(taken)
    np.testing.assert_array_equal(taken.toarray(), X.toarray()[rows])


# --------------------------------------------------------------------------- statistics
def test_block_stats_on_csr_equal_dense():
    rng = np.random.default_rng(4)
    X = _sparse_matrix(400, 12, 0.3, 4)
    X = X.tolil()
    X[:, 5] = 0.7  # a constant column: M2 must be ~0, not rounding noise
    X[7, 2], X[9, 2], X[9, 3] = np.nan, np.inf, -np.inf
    X = X.tocsr()
    y = (rng.uniform(size=400) < 0.5).astype(float)
    y[11] = np.nan
    w = rng.uniform(0.5, 2.0, size=400)
    sparse, dense = block_stats(X, y, w, 2), block_stats(X.toarray(), y, w, 2)
    np.testing.assert_array_equal(sparse.nonfinite_features, dense.nonfinite_features)
    assert sparse.nonfinite_features[2] == 2 and sparse.nonfinite_features[3] == 1
    for field in ("count", "nonfinite_labels", "bad_vector_rows", "label_min", "label_max"):
        assert getattr(sparse, field) == getattr(dense, field)
    assert sparse.weight_sum == pytest.approx(dense.weight_sum, rel=1e-14)
    np.testing.assert_allclose(sparse.mean, dense.mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sparse.m2, dense.m2, rtol=1e-10, atol=1e-12)
    # only the mean's own rounding (as in the dense path), no Σwx² − W·mean² cancellation
    assert sparse.m2[5] < 1e-24 and dense.m2[5] < 1e-24
    # merging CSR and dense summaries of two halves gives the summary of the whole
    top, bottom = X[:150], X[150:]
    merged = merge_stats(block_stats(top, y[:150], w[:150]),
                         block_stats(bottom.toarray(), y[150:], w[150:]))
    np.testing.assert_allclose(merged.m2, block_stats(X.toarray(), y, w).m2, rtol=1e-10,
                               atol=1e-20)


# --------------------------------------------------------------------------- local rounds
def test_local_round_and_sample_rows_on_csr_equal_dense():
    from sparkml_aiaas.core.first_order import RuleSettings, init_state
    from sparkml_aiaas.core.regularizers import elastic_net
    from sparkml_aiaas.core.standardization import ParameterSpace

    loss, X, y, w, _, _, _ = _setup("logistic", n=600, d=10)
    d = X.shape[1]
    stats = block_stats(X, y, w)
    space = ParameterSpace.build(stats.mean, stats.std(), 1, True)
    spec = RoundSpec(loss=loss, space=space, penalty=elastic_net(space, 0.01, 0.0, True), rule="adam",
                     settings=RuleSettings(), step=0.05, local_steps=4, fraction=0.3, seed=7,
                     iteration=2)
    x0 = np.zeros(space.n_vars)
    state = init_state("adam", x0.size)
    on_csr = local_round(spec, X, y, w, x0, state, partition=1)
    on_dense = local_round(spec, X.toarray(), y, w, x0, state, partition=1)
    np.testing.assert_allclose(on_csr[0], on_dense[0], rtol=1e-12, atol=1e-14)
    assert on_csr[2] == pytest.approx(on_dense[2], rel=1e-14)
    assert on_csr[3] == pytest.approx(on_dense[3], rel=1e-12)
    rows = sample_rows(X.shape[0], 0.3, np.random.default_rng(0))
    assert take_rows(X, rows).shape == (rows.size, d)


# --------------------------------------------------------------------------- block files
def _is_mapped(array):
    """Whether ``array`` is a (read-only) view of a memory map rather than a copy."""
    import mmap

    base = array
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return not array.flags.owndata and not array.flags.writeable
        base = getattr(base, "base", None)
    return False


@pytest.fixture
def local_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARK_LOCAL_DIRS", str(tmp_path))
    return tmp_path


def test_csr_block_round_trip_is_memory_mapped(local_dirs):
    rng = np.random.default_rng(0)
    X = _sparse_matrix(40, 9, 0.25, 5)
    y, w = rng.normal(size=40), rng.uniform(size=40)
    writer = block_files.BlockWriter("fit-s", 0, 0, 9, layout="csr")
    writer.append(X[:15], y[:15], w[:15])
    writer.append(X[15:30].toarray(), y[15:30], w[15:30])  # a dense batch into a CSR block
    assert block_files.open_block(writer.path) is None  # not complete yet
    writer.append(X[30:], y[30:], w[30:])
    path = writer.close()
    with open(os.path.join(path, block_files.COMPLETE_MARKER)) as f:
        rows, cols, dtype, layout, nnz = f.read().split()
    assert (rows, cols, layout) == ("40", "9", "csr") and np.dtype(dtype) == np.float64
    assert int(nnz) == writer.nnz
    assert sorted(os.listdir(path)) == ["_COMPLETE", "data.bin", "indices.bin", "indptr.npy",
                                        "w.npy", "y.npy"]
    Xb, yb, wb = block_files.open_block(path)
    assert isinstance(Xb, sp.csr_matrix) and Xb.shape == (40, 9)
    # built over the memory-mapped files, not over copies
    assert _is_mapped(Xb.data) and _is_mapped(Xb.indices) and _is_mapped(Xb.indptr)
    assert Xb.indices.dtype == np.int32 and Xb.indptr.dtype == np.int32
    np.testing.assert_array_equal(Xb.toarray(), X.toarray())
    np.testing.assert_array_equal(yb, y)
    np.testing.assert_array_equal(wb, w)
    # the kernels run on the mapped block directly
    loss = LOSSES["squared"]
    coef, b = rng.normal(size=(9, 1)), np.array([0.3])
    assert_sums_equal(loss_gradient_sums(loss, Xb, yb, wb, coef, b),
                      loss_gradient_sums(loss, X.toarray(), y, w, coef, b))


def test_empty_and_aborted_csr_blocks(local_dirs):
    empty = block_files.BlockWriter("fit-s", 1, 0, 5, layout="csr").close()
    X, y, w = block_files.open_block(empty)
    assert sp.issparse(X) and X.shape == (0, 5) and X.nnz == 0 and y.shape == (0,)
    all_zero = block_files.BlockWriter("fit-s", 2, 0, 5, layout="csr")
    all_zero.append(np.zeros((3, 5)), np.ones(3), np.ones(3))
    X, _, _ = block_files.open_block(all_zero.close())
    assert X.shape == (3, 5) and X.nnz == 0
    aborted = block_files.BlockWriter("fit-s", 3, 1, 5, layout="csr")
    aborted.append(sp.eye(5, format="csr"), np.ones(5), np.ones(5))
    aborted.abort()
    assert not os.path.exists(aborted.path)
    assert block_files.remove_fit("fit-s") == 2
    with pytest.raises(ValueError, match="layout"):
        block_files.BlockWriter("fit-s", 4, 0, 5, layout="coo")


# --------------------------------------------------------------------------- Arrow decoding
VECTOR_STRUCT = pa.struct([
    pa.field("type", pa.int8(), nullable=False), ("size", pa.int32()),
    ("indices", pa.list_(pa.field("element", pa.int32(), nullable=False))),
    ("values", pa.list_(pa.field("element", pa.float64(), nullable=False))),
])


def _arrow_vectors(vectors):
    """pyspark.ml vectors as Spark's Arrow encoding of VectorUDT."""
    rows = []
    for v in vectors:
        if v is None:
            rows.append(None)
        elif isinstance(v, SparseVector):
            rows.append({"type": 0, "size": v.size, "indices": v.indices.tolist(),
                         "values": v.values.tolist()})
        else:
            rows.append({"type": 1, "size": None, "indices": None, "values": v.values.tolist()})
    return pa.array(rows, type=VECTOR_STRUCT)


def _batch(vectors, labels):
    n = len(vectors)
    return pa.RecordBatch.from_arrays(
        [_arrow_vectors(vectors), pa.array(np.asarray(labels, float)),
         pa.array(np.arange(1.0, n + 1.0))], names=["features", "label", "weight"])


MIXED = [
    Vectors.sparse(4, [1, 3], [2.0, -1.0]),
    Vectors.dense([0.5, 0.0, 0.0, 3.0]),  # dense, with zeros
    None,  # a null vector
    Vectors.sparse(5, [0], [1.0]),  # wrong size
    Vectors.dense([1.0, 2.0]),  # wrong size
    Vectors.sparse(4, [], []),  # all zero
    Vectors.sparse(4, [0, 2], [0.0, np.nan]),  # an explicit zero and a NaN
]
MIXED_DENSE = np.array([[0, 2, 0, -1], [0.5, 0, 0, 3], [0, 0, 0, 0], [0, 0, np.nan, 0]])


@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_vector_structs_decode_without_densifying(layout):
    X, y, w, bad = _vector_batch_to_numpy(_batch(MIXED, np.arange(7.0)), 4, layout)
    assert bad == 3
    np.testing.assert_array_equal(y, [0.0, 1.0, 5.0, 6.0])
    np.testing.assert_array_equal(w, [1.0, 2.0, 6.0, 7.0])
    assert sp.issparse(X) == (layout == "csr")
    dense = X.toarray() if sp.issparse(X) else X
    np.testing.assert_array_equal(dense, MIXED_DENSE)
    if layout == "csr":
        assert X.nnz == 5  # explicit zeros (also those of dense vectors) are not stored
        assert X.has_canonical_format


def test_sliced_struct_batch_keeps_its_offsets():
    batch = _batch(MIXED, np.arange(7.0)).slice(1, 5)  # rows 1..5: dense, null, bad, bad, zero
    X, y, w, bad = _vector_batch_to_numpy(batch, 4, "csr")
    assert bad == 3
    np.testing.assert_array_equal(X.toarray(), MIXED_DENSE[[1, 2]])
    np.testing.assert_array_equal(y, [1.0, 5.0])


def test_out_of_range_sparse_index_is_refused():
    bad = pa.array([{"type": 0, "size": 3, "indices": [5], "values": [1.0]}], type=VECTOR_STRUCT)
    batch = pa.RecordBatch.from_arrays([bad, pa.array([1.0]), pa.array([1.0])],
                                       names=["features", "label", "weight"])
    with pytest.raises(DataValidationError, match="index outside 0..2"):
        _vector_batch_to_numpy(batch, 3, "csr")


def _sparse_vectors(rng, n, d, density):
    out = []
    for _ in range(n):
        idx = np.flatnonzero(rng.uniform(size=d) < density)
        out.append(Vectors.sparse(d, idx.tolist(), rng.normal(size=idx.size).tolist()))
    return out


def _dense_vectors(rng, n, d):
    return [Vectors.dense(rng.normal(size=d)) for _ in range(n)]


@pytest.mark.parametrize("first, then, fmt, layout", [
    ("sparse", "dense", "auto", "csr"),  # the first batch decides; later dense rows go CSR
    ("dense", "sparse", "auto", "dense"),
    ("dense", "dense", "sparse", "csr"),  # forced
    ("sparse", "sparse", "dense", "dense"),
])
def test_write_block_layout_is_decided_by_the_first_batch(local_dirs, first, then, fmt, layout):
    rng = np.random.default_rng(1)
    make = {"sparse": lambda: _sparse_vectors(rng, 30, 20, 0.05),
            "dense": lambda: _dense_vectors(rng, 30, 20)}
    batches = [_batch(make[first](), np.zeros(30)), _batch(make[then](), np.ones(30))]
    empty = batches[0].slice(0, 0)
    key = write_block("fit-w", 0, 0, 20, True, [empty] + batches, BlockOptions(fmt, "float64"))
    assert key["rows"] == 60
    X, y, w = block_files.open_block(key["path"])
    assert (sp.issparse(X), X.shape) == (layout == "csr", (60, 20))
    expected = np.vstack([_vector_batch_to_numpy(b, 20, "dense")[0] for b in batches])
    np.testing.assert_array_equal(X.toarray() if sp.issparse(X) else X, expected)
    stats = pickle.loads(key["stats"])
    reference = block_stats(expected, np.asarray(y), np.asarray(w))
    assert stats.count == 60
    np.testing.assert_allclose(stats.mean, reference.mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats.m2, reference.m2, rtol=1e-10)
    assert block_files.remove_fit("fit-w") == 1


def test_write_block_counts_bad_vectors_and_cleans_up_on_failure(local_dirs):
    key = write_block("fit-b", 0, 0, 4, True, [_batch(MIXED, np.zeros(7))],
                      BlockOptions("auto", "float64"))
    assert pickle.loads(key["stats"]).bad_vector_rows == 3 and key["rows"] == 4

    def failing():
        yield _batch(MIXED, np.zeros(7))
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError, match="source failed"):
        write_block("fit-b", 1, 0, 4, True, failing(), BlockOptions("sparse", "float64"))
    assert os.listdir(block_files.fit_dir("fit-b")) == [os.path.basename(key["path"])]


# --------------------------------------------------------------------------- params
def test_block_format_param_values_are_checked():
    assert LogisticRegression().getBlockFormat() == "auto"
    with pytest.raises(ConfigError, match=r"param blockFormat must be one of \['auto', 'dense', "
                                          r"'sparse'\], got 'csr'"):
        LogisticRegression(blockFormat="csr").validate_params()
    with pytest.raises(ValueError, match="param blockFormat must be one of"):
        BlockOptions("csr", "float64")


# --------------------------------------------------------------------------- Spark fits
N_ROWS, N_FEATURES, DENSITY = 2000, 200, 0.05
REG = 0.01
EXACT = dict(regParam=REG, standardization=False, tol=1e-12, maxIter=300)


def _sparse_problem(n, d, density, seed, k=1):
    rng = np.random.default_rng(seed)
    vectors = _sparse_vectors(rng, n, d, density)
    X = sp.vstack([sp.csr_matrix((v.values, v.indices, [0, v.indices.size]), shape=(1, d))
                   for v in vectors]).tocsr()
    true = rng.normal(size=(d, k)) * 1.5
    margin = X @ true + 0.3
    if k == 1:
        y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-margin[:, 0]))).astype(float)
    else:
        y = np.argmax(margin + rng.gumbel(size=margin.shape), axis=1).astype(float)
    target = margin[:, 0] + 0.5 * rng.normal(size=n)
    return vectors, X, y, target


def _schema(*doubles):
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    return StructType([StructField("features", VectorUDT())]
                      + [StructField(name, DoubleType()) for name in doubles])


def _frame(spark, vectors, y, target, num_slices=4):
    """Rows in ``num_slices`` partitions, in order (a declared schema: no inference job)."""
    rows = [(v, float(a), float(t)) for v, a, t in zip(vectors, y, target)]
    rdd = spark.sparkContext.parallelize(rows, num_slices)
    return spark.createDataFrame(rdd, _schema("label", "target"))


@pytest.fixture(scope="module")
def problem():
    return _sparse_problem(N_ROWS, N_FEATURES, DENSITY, 0)


@pytest.fixture(scope="module")
def sparse_df(spark, problem):
    vectors, _, y, target = problem
    frame = _frame(spark, vectors, y, target).cache()
    frame.count()
    yield frame
    frame.unpersist()


@pytest.fixture(scope="module")
def dense_df(spark, problem):
    vectors, _, y, target = problem
    frame = _frame(spark, [DenseVector(v.toArray()) for v in vectors], y, target).cache()
    frame.count()
    yield frame
    frame.unpersist()


@pytest.fixture(scope="module")
def sparse_model(sparse_df):
    return LogisticRegression(numPartitions=4, **EXACT).fit(sparse_df)  # auto → CSR


@pytest.fixture(scope="module")
def dense_model(dense_df):
    return LogisticRegression(numPartitions=4, blockFormat="dense", **EXACT).fit(dense_df)


def _layouts(blocks):
    layouts = []
    for row in sorted(blocks.keys.collect(), key=lambda r: r["partition"]):
        with open(os.path.join(row["path"], block_files.COMPLETE_MARKER)) as f:
            layouts.append(f.read().split()[3])
    return layouts


def test_auto_stores_sparse_vectors_as_csr(sparse_df, dense_df, problem):
    _, X, y, _ = problem
    spec = FeatureSpec(vector_col="features")
    with ResidentBlocks.build(sparse_df, spec, "label", num_partitions=4) as blocks:
        assert _layouts(blocks) == ["csr"] * 4
        row = blocks.keys.collect()[0]
        Xb, _, _ = block_files.open_block(row["path"])  # local mode: the files are here
        assert isinstance(Xb, sp.csr_matrix)
        coef, b = np.full((N_FEATURES, 1), 0.01), np.array([0.1])
        sums = DistributedDataPass(blocks, "logistic")(coef, b, with_hessian=True)
        sparse_stats = blocks.stats
    expected = loss_gradient_sums(LOSSES["logistic"], X, y, np.ones(N_ROWS), coef, b,
                                  with_hessian=True)
    assert_sums_equal(sums, expected, rtol=1e-12)
    with ResidentBlocks.build(dense_df, spec, "label", num_partitions=4) as blocks:
        # density counts non-zero values, so DenseVectors of mostly zeros are stored as CSR too
        # (dense data stays dense: see the partition mix below)
        assert _layouts(blocks) == ["csr"] * 4
        dense_stats = blocks.stats
    np.testing.assert_allclose(sparse_stats.mean, dense_stats.mean, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(sparse_stats.m2, dense_stats.m2, rtol=1e-10)


def test_sparse_fit_equals_dense_fit(sparse_model, dense_model):
    np.testing.assert_allclose(sparse_model.coefficients, dense_model.coefficients,
                               rtol=0, atol=1e-8)
    assert sparse_model.intercept == pytest.approx(dense_model.intercept, abs=1e-8)
    assert sparse_model.summary.converged


def test_sparse_fit_equals_sklearn_on_scipy_sparse(sparse_model, problem):
    _, X, y, _ = problem
    sk = SkLogisticRegression(C=1.0 / (N_ROWS * REG), tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(sparse_model.coefficients, sk.coef_[0], rtol=1e-4, atol=1e-5)
    assert sparse_model.intercept == pytest.approx(sk.intercept_[0], rel=1e-4, abs=1e-5)


def _core_fit(X, y):
    """The fit without Spark: fit_glm with a pass over the whole matrix (dense or CSR)."""
    w = np.ones(X.shape[0])
    loss = LOSSES["logistic"]

    def data_pass(coef, intercept, extra=None, with_hessian=False):
        return loss_gradient_sums(loss, X, y, w, coef, intercept, extra, with_hessian=with_hessian)

    return fit_glm(data_pass, block_stats(X, y, w), loss=loss, reg_param=REG,
                   standardization=False, tol=1e-12, max_iter=300).coef


def test_sparse_fit_equals_the_core_fit_on_the_csr_matrix(sparse_model, problem):
    _, X, y, _ = problem
    np.testing.assert_allclose(sparse_model.coefficients, _core_fit(X, y)[:, 0], rtol=0,
                               atol=1e-8)


@pytest.fixture(scope="module")
def mixed_df(spark):
    """Partitions 0-1 hold sparse vectors, 2-3 dense vectors of every feature."""
    rng = np.random.default_rng(5)
    n, d = 600, 40
    vectors = _sparse_vectors(rng, n // 2, d, 0.05) + _dense_vectors(rng, n // 2, d)
    X = np.vstack([v.toArray() for v in vectors])
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(X @ rng.normal(size=d) * 0.5)))).astype(float)
    frame = _frame(spark, vectors, y, X[:, 0] + rng.normal(size=n)).cache()
    frame.count()
    yield frame, X, y
    frame.unpersist()


def test_partition_mix_of_dense_and_sparse_blocks(mixed_df):
    frame, X, y = mixed_df
    with ResidentBlocks.build(frame, FeatureSpec(vector_col="features"), "label",
                              num_partitions=4) as blocks:
        assert _layouts(blocks) == ["csr", "csr", "dense", "dense"]
        coef, b = np.linspace(-1, 1, 40)[:, None], np.array([0.2])
        sums = DistributedDataPass(blocks, "logistic")(coef, b, with_hessian=True)
    expected = loss_gradient_sums(LOSSES["logistic"], X, y, np.ones(len(y)), coef, b,
                                  with_hessian=True)
    assert_sums_equal(sums, expected, rtol=1e-12)
    mixed = LogisticRegression(numPartitions=4, **EXACT).fit(frame)
    np.testing.assert_allclose(mixed.coefficients, _core_fit(X, y)[:, 0], atol=1e-8)
    sk = SkLogisticRegression(C=1.0 / (len(y) * REG), tol=1e-12, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(mixed.coefficients, sk.coef_[0], rtol=1e-4, atol=1e-5)


def test_auto_reads_dense_vectors_as_arrays_and_sparse_ones_as_structs(spark, sparse_df,
                                                                       mixed_df, monkeypatch):
    """The probe of the first rows picks the cheap array path for dense vector data."""
    from sparkml_aiaas.engine import blocks as blocks_module

    rng = np.random.default_rng(8)
    dense_rows = _dense_vectors(rng, 300, 12)
    dense = _frame(spark, dense_rows, (rng.uniform(size=300) < 0.5).astype(float),
                   rng.normal(size=300))
    assert not blocks_module.vectors_look_sparse(dense, "features", 12)
    assert blocks_module.vectors_look_sparse(sparse_df, "features", N_FEATURES)
    assert blocks_module.vectors_look_sparse(mixed_df[0], "features", 40)  # sparse rows first
    seen = []
    real = blocks_module.training_frame

    def spy(*args, keep_vectors=False, **kwargs):
        seen.append(keep_vectors)
        return real(*args, keep_vectors=keep_vectors, **kwargs)

    monkeypatch.setattr(blocks_module, "training_frame", spy)
    with ResidentBlocks.build(dense, FeatureSpec(vector_col="features"), "label",
                              num_partitions=2) as blocks:
        assert _layouts(blocks) == ["dense", "dense"]
        assert blocks.stats.count == 300
    with ResidentBlocks.build(sparse_df, FeatureSpec(vector_col="features"), "label",
                              num_partitions=2) as blocks:
        assert _layouts(blocks) == ["csr", "csr"]
    assert seen == [False, True]


@pytest.fixture(scope="module")
def small_problem(spark):
    rng = np.random.default_rng(9)
    n, d = 500, 30
    vectors = _sparse_vectors(rng, n, d, 0.1)
    X = np.vstack([v.toArray() for v in vectors])
    margin = X @ rng.normal(size=(d, 3))
    y3 = np.argmax(margin + rng.gumbel(size=margin.shape), axis=1).astype(float)
    target = margin[:, 0] + 0.3 * rng.normal(size=n)
    target[::25] += 20.0  # outliers for huber
    rows = [(v, float(a % 2), float(c), float(t)) for v, a, c, t in zip(vectors, y3, y3, target)]
    frame = spark.createDataFrame(spark.sparkContext.parallelize(rows, 3),
                                  _schema("label", "cls", "target"))
    frame = frame.cache()
    frame.count()
    yield frame
    frame.unpersist()


# The task-side paths on CSR blocks (every loss's kernels are checked without Spark above):
# k > 1, an extra variable, the Hessian for newton, sampled rows for sgd, local rounds.  A
# fixed number of iterations on the same partitions, so both layouts follow one trajectory.
CASES = {
    "huber": lambda **kw: LinearRegression(labelCol="target", loss="huber", **kw),
    "multinomial": lambda **kw: LogisticRegression(labelCol="cls", family="multinomial", **kw),
    "logistic-newton": lambda **kw: LogisticRegression(optimizer="newton", **kw),
    "hinge-sgd": lambda **kw: LinearSVC(optimizer="sgd", miniBatchFraction=0.5, stepSize=0.5,
                                        seed=3, **kw),
    "logistic-local-sgd": lambda **kw: LogisticRegression(optimizer="adam", localSteps=3,
                                                          miniBatchFraction=0.5, stepSize=0.05,
                                                          seed=3, **kw),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_loss_and_optimizer_path_on_csr_blocks(small_problem, case):
    settings = dict(regParam=0.05, maxIter=3, tol=0.0, numPartitions=3)
    sparse = CASES[case](blockFormat="sparse", **settings).fit(small_problem)
    dense = CASES[case](blockFormat="dense", **settings).fit(small_problem)
    np.testing.assert_allclose(sparse.coefficientMatrix, dense.coefficientMatrix,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sparse.interceptVector, dense.interceptVector,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sparse.summary.objectiveHistory, dense.summary.objectiveHistory,
                               rtol=1e-10)


def test_sparse_option_on_numeric_columns(spark):
    """blockFormat='sparse' also stores plain numeric columns as CSR (auto keeps them dense)."""
    rng = np.random.default_rng(2)
    X = np.where(rng.uniform(size=(300, 4)) < 0.3, rng.normal(size=(300, 4)), 0.0)
    y = (X.sum(axis=1) + rng.normal(size=300) > 0).astype(float)
    import pandas as pd

    pdf = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(label=y)
    frame = spark.createDataFrame(pdf)
    cols = ["a", "b", "c", "d"]
    with ResidentBlocks.build(frame, FeatureSpec(columns=cols), "label", num_partitions=2,
                              block_format="sparse") as blocks:
        assert _layouts(blocks) == ["csr", "csr"]
    sparse = LogisticRegression(featuresCols=cols, blockFormat="sparse", numPartitions=2,
                                **EXACT).fit(frame)
    np.testing.assert_allclose(sparse.coefficients, _core_fit(X, y)[:, 0], atol=1e-8)


def test_null_and_wrong_size_sparse_vectors_are_reported(spark):
    rows = [(Vectors.sparse(3, [0], [1.0]), 1.0), (None, 0.0), (Vectors.sparse(4, [1], [1.0]), 0.0),
            (Vectors.sparse(3, [2], [2.0]), 0.0)]
    frame = spark.createDataFrame(rows, _schema("label"))
    with pytest.raises(DataValidationError, match="2 rows have a null feature vector"):
        LogisticRegression(numPartitions=1).fit(frame)


# --------------------------------------------------------------------------- persistence
def test_save_load_identical_predictions(sparse_model, sparse_df, tmp_path):
    path = str(tmp_path / "sparse_lr")
    sparse_model.write().save(path)
    loaded = LogisticRegressionModel.load(path)
    assert loaded.getBlockFormat() == "auto" and loaded.getBlockDtype() == "float64"
    np.testing.assert_array_equal(loaded.coefficients, sparse_model.coefficients)
    cols = ["rawPrediction", "probability", "prediction"]
    before = sparse_model.transform(sparse_df).select(*cols).toPandas()
    after = loaded.transform(sparse_df).select(*cols).toPandas()
    np.testing.assert_array_equal(np.stack(before["probability"]), np.stack(after["probability"]))
    np.testing.assert_array_equal(before["prediction"], after["prediction"])

    forced = sparse_model.copy({sparse_model.blockFormat: "sparse"})
    forced.write().save(str(tmp_path / "forced"))
    assert LogisticRegressionModel.load(str(tmp_path / "forced")).getBlockFormat() == "sparse"
    estimator_path = str(tmp_path / "estimator")
    LogisticRegression(blockFormat="sparse").save(estimator_path)
    assert LogisticRegression.load(estimator_path).getBlockFormat() == "sparse"


def test_block_format_from_yaml_config(tmp_path):
    from sparkml_aiaas.config import PARAM_ALIASES, ModelSettings
    from sparkml_aiaas.pipeline import build_estimator

    assert PARAM_ALIASES["block_format"] == "blockFormat"
    settings = ModelSettings(features_col="features", params={"block_format": "sparse"})
    assert build_estimator(settings).getBlockFormat() == "sparse"
    bad = build_estimator(ModelSettings(features_col="features", params={"block_format": "coo"}))
    with pytest.raises(ConfigError, match="blockFormat must be one of"):
        bad.validate_params()


# --------------------------------------------------------------------------- cleanup
def test_no_block_files_left_after_sparse_fit(spark, sparse_df, monkeypatch):
    seen = []
    original = ResidentBlocks.cleanup

    def spy(self):
        paths = [row["path"] for row in self.keys.collect()] if self._keys_built else []
        seen.append((self.fit_id, paths, [os.path.isdir(p) for p in paths]))
        original(self)

    monkeypatch.setattr(ResidentBlocks, "cleanup", spy)
    LogisticRegression(maxIter=3, numPartitions=3).fit(sparse_df)
    assert len(seen) == 1
    fit_id, paths, existed = seen[0]
    assert len(paths) == 3 and all(existed)
    assert not any(os.path.exists(p) for p in paths)
    assert not os.path.exists(os.path.dirname(paths[0]))  # the fit's folder went too
