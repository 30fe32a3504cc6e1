"""fitMultiple of the linear estimators: shared blocks and passes, models bit-identical to fit."""

import threading
import uuid
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import Estimator
from pyspark.ml.evaluation import BinaryClassificationEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

import sparkml_aiaas.models.fit_multiple as fit_multiple
import sparkml_aiaas.models.linear as linear
from sparkml_aiaas.engine import ResidentBlocks
from sparkml_aiaas.errors import ConfigError, DataValidationError
from sparkml_aiaas.models import LinearRegression, LogisticRegression
from sparkml_aiaas.models.linear import LinearSVC

N, D = 400, 4
COLS = [f"x{i}" for i in range(D)]


@pytest.fixture(scope="module")
def pdf():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(N, D))
    margin = X @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.2
    frame = pd.DataFrame(X, columns=COLS)
    frame["label"] = (rng.uniform(size=N) < 1.0 / (1.0 + np.exp(-margin))).astype(float)
    frame["cls"] = np.digitize(margin + 0.5 * rng.normal(size=N), [-0.7, 0.7]).astype(float)
    frame["target"] = X @ [2.0, -1.0, 0.5, 0.0] + 1.5 + 0.5 * rng.standard_t(3, size=N)
    frame["w"] = rng.integers(1, 4, size=N).astype(float)
    return frame


def within(seconds, target):
    """``target()`` in a thread, failing instead of hanging if it does not end in time."""
    box = {}

    def body():
        try:
            box["value"] = target()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def shared_runs(monkeypatch):
    """Counts the batched runs (fit_shared calls): proves which path a fitMultiple took."""
    calls = []
    original = fit_multiple.fit_shared

    def spy(estimators, dataset, invalid):
        calls.append(len(estimators))
        return original(estimators, dataset, invalid)

    monkeypatch.setattr(fit_multiple, "fit_shared", spy)
    return calls


@contextmanager
def job_group(sc):
    """Spark jobs started by this thread inside the block: ``ids()`` lists them."""
    group = f"fit-multiple-test-{uuid.uuid4().hex[:8]}"
    sc.setJobGroup(group, "fitMultiple test")

    class Jobs:
        @staticmethod
        def ids():
            return sc.statusTracker().getJobIdsForGroup(group)

    try:
        yield Jobs
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


def assert_same_model(got, want):
    np.testing.assert_array_equal(got.coefficientMatrix, want.coefficientMatrix)
    np.testing.assert_array_equal(got.interceptVector, want.interceptVector)
    np.testing.assert_array_equal(got._extra, want._extra)
    assert got.summary.objectiveHistory == want.summary.objectiveHistory
    assert got.summary.totalIterations == want.summary.totalIterations
    assert got.summary.numPasses == want.summary.numPasses
    assert ({p.name: v for p, v in got.extractParamMap().items()}
            == {p.name: v for p, v in want.extractParamMap().items()})


def grid(est, maps):
    """Param maps of ``est`` from ``{name: value}`` dicts."""
    return [{getattr(est, name): value for name, value in m.items()} for m in maps]


CASES = {
    # family and optimizer vary too: k and the Hessian differ between requests of one job.
    "logistic": (lambda: LogisticRegression(featuresCols=COLS, maxIter=8),
                 [{"regParam": 0.0}, {"regParam": 0.05, "elasticNetParam": 0.7},
                  {"regParam": 0.01, "maxIter": 3, "fitIntercept": False},
                  {"family": "multinomial"}, {"optimizer": "newton", "regParam": 0.02}]),
    "multinomial": (lambda: LogisticRegression(featuresCols=COLS, labelCol="cls", maxIter=8,
                                               family="multinomial", weightCol="w"),
                    [{"regParam": 0.0}, {"regParam": 0.05, "elasticNetParam": 0.7},
                     {"maxIter": 3}]),
    # both losses in one grid, three partitions, float32 blocks
    "regression": (lambda: LinearRegression(featuresCols=COLS, labelCol="target", maxIter=8,
                                            numPartitions=3, blockDtype="float32"),
                   [{"regParam": 0.05, "elasticNetParam": 0.7}, {"loss": "huber"},
                    {"loss": "huber", "regParam": 0.05, "fitIntercept": False},
                    {"optimizer": "gd"}]),
    "svc": (lambda: LinearSVC(featuresCols=COLS, maxIter=8),
            [{"regParam": 0.0}, {"regParam": 0.05, "elasticNetParam": 0.7},
             {"fitIntercept": False, "maxIter": 3}]),
    # CSR blocks from a vector column: k = 1 and k = 2 chunk a CSR block differently
    "sparse": (lambda: LogisticRegression(featuresCol="features", maxIter=5,
                                          blockFormat="sparse"),
               [{"family": "binomial"}, {"family": "multinomial"}, {"regParam": 0.05}]),
}


@pytest.fixture
def block_builds(monkeypatch):
    """Counts ResidentBlocks.build calls."""
    builds = []
    original_build = ResidentBlocks.build.__func__

    def counting_build(cls, *args, **kwargs):
        builds.append(1)
        return original_build(cls, *args, **kwargs)

    monkeypatch.setattr(ResidentBlocks, "build", classmethod(counting_build))
    return builds


@pytest.mark.parametrize("case", list(CASES))
def test_models_are_bit_identical_to_separate_fits_in_fewer_jobs(spark, df, case, shared_runs,
                                                                 block_builds):
    make, varied = CASES[case]
    est = make()
    maps = grid(est, varied)
    if case == "sparse":
        df = VectorAssembler(inputCols=COLS, outputCol="features").transform(df)
    sc = spark.sparkContext
    with job_group(sc) as shared:
        models = dict(est.fitMultiple(df, maps))
        shared_jobs = len(shared.ids())
    shared_builds = len(block_builds)
    with job_group(sc) as separate:
        singles = [est.fit(df, param_map) for param_map in maps]
        separate_jobs = len(separate.ids())
    assert shared_runs == [len(maps)] and sorted(models) == list(range(len(maps)))
    for index, single in enumerate(singles):
        assert_same_model(models[index], single)
    assert len({m.summary.blockBuildSeconds for m in models.values()}) == 1  # one build
    passes = [models[i].summary.numPasses for i in range(len(maps))]
    print(f"\n{case}: {len(maps)} maps, passes {passes}: fitMultiple {shared_jobs} Spark jobs "
          f"({shared_builds} block build), separate fits {separate_jobs} jobs "
          f"({len(block_builds) - shared_builds} block builds)")
    assert shared_builds == 1 and len(block_builds) == 1 + len(maps)
    # A fit's other jobs (building and removing its blocks) are the same for every map...
    others, remainder = divmod(separate_jobs - sum(passes), len(maps))
    assert remainder == 0 and others >= 2
    # ...and fitMultiple runs them once, plus one job per round: the longest fit's passes.
    assert shared_jobs == max(passes) + others


def test_a_shared_pass_sums_like_separate_passes_through_a_tree_level(spark, df):
    """Six partitions: the ordered tree reduce adds a level (scale 3) to both kinds of pass."""
    from sparkml_aiaas.core.losses import LOSSES, SumsRequest
    from sparkml_aiaas.engine import DistributedDataPass, FeatureSpec
    from sparkml_aiaas.engine.batched_pass import BatchedBlocksPass

    rng = np.random.default_rng(0)
    requests = [SumsRequest(LOSSES["logistic"], rng.normal(size=(D, 1)), np.array([0.3])),
                SumsRequest(LOSSES["multinomial"], rng.normal(size=(D, 2)), np.zeros(2), None,
                            True),
                SumsRequest(LOSSES["hinge"], rng.normal(size=(D, 1)), np.array([-0.2]))]
    with ResidentBlocks.build(df, FeatureSpec(columns=COLS), "label",
                              num_partitions=6) as blocks:
        batched = BatchedBlocksPass(blocks, 2)(requests)
        for request, got in zip(requests, batched):
            want = DistributedDataPass(blocks, request.loss, 2)(
                request.coef, request.intercept, request.extra, request.with_hessian)
            assert (got.loss, got.weight, got.count) == (want.loss, want.weight, want.count)
            np.testing.assert_array_equal(got.grad, want.grad)
            if want.hessian is not None:
                np.testing.assert_array_equal(got.hessian, want.hessian)


def test_cross_validator_gives_the_same_selection(spark, df, monkeypatch, shared_runs):
    lr = LogisticRegression(featuresCols=COLS, maxIter=5)
    param_grid = ParamGridBuilder().addGrid(lr.regParam, [0.0, 0.1]).build()

    def cross_validate(parallelism):
        cv = CrossValidator(estimator=lr, estimatorParamMaps=param_grid, numFolds=3, seed=11,
                            evaluator=BinaryClassificationEvaluator(), parallelism=parallelism,
                            collectSubModels=True)
        return cv.fit(df)

    # Two pool threads ask the iterator at once: one runs the batch, the other waits for it.
    batched = cross_validate(parallelism=2)
    assert shared_runs == [len(param_grid)] * 3  # one batched run per fold
    monkeypatch.setattr(linear._LinearEstimator, "fitMultiple", Estimator.fitMultiple)
    one_by_one = cross_validate(parallelism=1)
    assert shared_runs == [len(param_grid)] * 3
    for fold_batched, fold_alone in zip(batched.subModels, one_by_one.subModels):
        for got, want in zip(fold_batched, fold_alone):
            assert_same_model(got, want)
    # The models are identical, but areaUnderROC itself may differ in its last bit: Spark
    # sums the curve's per-partition areas in the order the tasks finish.
    np.testing.assert_allclose(batched.avgMetrics, one_by_one.avgMetrics, rtol=1e-14)
    assert np.argmax(batched.avgMetrics) == np.argmax(one_by_one.avgMetrics)
    assert_same_model(batched.bestModel, one_by_one.bestModel)


def test_maps_that_cannot_share_fall_back_to_separate_fits(df, tmp_path, shared_runs):
    est = LogisticRegression(featuresCols=COLS, maxIter=5)
    different_columns = [{est.featuresCols: COLS}, {est.featuresCols: COLS[:2]}]
    checkpoints = [{est.regParam: 0.0}, {est.regParam: 0.1,
                                         est.checkpointDir: str(tmp_path / "a")}]
    for maps in (different_columns, checkpoints):
        models = dict(est.fitMultiple(df, maps))
        for index, param_map in enumerate(maps):
            want = est.fit(df, param_map)
            np.testing.assert_array_equal(models[index].coefficientMatrix,
                                          want.coefficientMatrix)
            assert models[index].summary.objectiveHistory == want.summary.objectiveHistory
    assert shared_runs == []


def test_which_maps_share_is_decided_without_spark():
    est = LogisticRegression(featuresCols=COLS)
    share = fit_multiple.batched_fit_multiple

    def decided(*maps):
        return share(est, None, [{getattr(est, k): v for k, v in m.items()} for m in maps])

    assert decided({"regParam": 0.1}, {"maxIter": 3, "family": "multinomial"}) is not None
    assert decided({"regParam": 0.1}) is None  # a single map: nothing to share
    assert decided({}, {"optimizer": "adam"}) is None
    assert decided({}, {"validationIndicatorCol": "v"}) is None
    assert decided({}, {"numPartitions": 5}) is None
    assert decided({}, {"blockDtype": "float32"}) is None
    assert decided({}, {"aggregationDepth": 3}) is None
    assert decided({}, {"regParam": -1.0}) is not None  # that map fails on its own


def test_failing_maps_raise_for_their_index_without_hanging(df, monkeypatch, shared_runs):
    est = LogisticRegression(featuresCols=COLS, labelCol="cls", maxIter=6)
    original_fit_glm = linear.fit_glm

    def fails_mid_fit(data_pass, stats, **kwargs):
        if kwargs["reg_param"] != 0.3:
            return original_fit_glm(data_pass, stats, **kwargs)
        calls = []

        def counted(*args, **kw):
            if len(calls) == 3:
                raise RuntimeError("optimizer exploded")
            calls.append(1)
            return data_pass(*args, **kw)

        return original_fit_glm(counted, stats, **kwargs)

    monkeypatch.setattr(linear, "fit_glm", fails_mid_fit)
    maps = [{est.regParam: 0.0}, {est.regParam: -1.0},  # invalid param
            {est.family: "binomial"},  # three classes: refused by the data checks
            {est.regParam: 0.3}, {est.regParam: 0.05}]
    cleanups = []
    original_cleanup = ResidentBlocks.cleanup

    def spy(self):
        cleanups.append(self.fit_id)
        original_cleanup(self)

    monkeypatch.setattr(ResidentBlocks, "cleanup", spy)

    def collect():
        iterator = est.fitMultiple(df, maps)
        results = {}
        for _ in maps:
            try:
                index, model = next(iterator)
                results[index] = model
            except Exception as exc:  # noqa: BLE001 - recorded per call
                results.setdefault("errors", []).append(exc)
        return results

    results = within(120, collect)
    assert shared_runs == [len(maps)] and len(cleanups) == 1
    errors = results.pop("errors")
    assert [type(e) for e in errors] == [ConfigError, DataValidationError, RuntimeError]
    assert "regParam" in str(errors[0]) and "optimizer exploded" in str(errors[2])
    assert sorted(results) == [0, 4]
    for index in (0, 4):
        assert_same_model(results[index], est.fit(df, maps[index]))
    with pytest.raises(ConfigError, match="regParam"):
        est.fit(df, maps[1])
