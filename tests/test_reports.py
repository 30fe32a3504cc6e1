"""Run reports: PNG plots from numpy, the self-contained HTML file, training jobs' reports."""

import base64
import json
import os
import re

import numpy as np
import pytest

from sparkml_aiaas.reports import plots
from sparkml_aiaas.reports.html import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_bytes=2000):
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > min_bytes, (path, len(data))
    return data


def test_plots_module_needs_no_display_and_leaves_the_backend_alone(tmp_path):
    """No pyplot and no matplotlib.use: a notebook importing it keeps its inline backend."""
    import subprocess
    import sys

    source = open(plots.__file__).read()
    assert not re.search(r"^\s*(import|from) pyspark", source, re.M)
    assert not re.search(r"^\s*(import|from) matplotlib.pyplot|import pyplot", source, re.M)
    assert "matplotlib.use(" not in source
    code = ("import matplotlib; matplotlib.use('svg'); "
            "from sparkml_aiaas.reports import plots, training; "
            f"plots.loss_curve([2.0, 1.0], {str(tmp_path / 'l.png')!r}); "
            "print(matplotlib.get_backend())")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"
    assert_png(str(tmp_path / "l.png"))


def test_plot_functions_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    score = y * 0.8 + rng.normal(0, 0.5, 300)
    pred = (score > 0.4).astype(float)
    assert_png(plots.loss_curve([3.0, 2.0, 1.5, 1.2, 1.1], str(tmp_path / "loss.png")))
    assert_png(plots.roc_curve_plot(y, score, str(tmp_path / "roc.png")))
    assert_png(plots.pr_curve_plot(y, score, str(tmp_path / "pr.png")))
    assert_png(plots.confusion_matrix_plot(y, pred, [0, 1], str(tmp_path / "cm.png")))
    three = rng.integers(0, 3, 200)
    assert_png(plots.confusion_matrix_plot(three, rng.integers(0, 3, 200), None,
                                           str(tmp_path / "cm3.png")))
    yr = rng.normal(size=400)
    assert_png(plots.residuals_plot(yr, yr + rng.normal(0, 0.1, 400), str(tmp_path / "res.png")))
    report = {"method": "int8", "bytes_before": 40000, "bytes_after": 10500,
              "metric": "accuracy", "metric_before": 0.91, "metric_after": 0.9}
    assert_png(plots.compression_plot(report, str(tmp_path / "c1.png")))
    assert_png(plots.compression_plot([report, dict(report, method="prune+int8", bytes_after=6000,
                                                    metric_after=None)],
                                      str(tmp_path / "c2.png")))
    # No temporary files are left beside the plots.
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_one_vs_rest_roc_matches_scikit_learn_and_plots(tmp_path):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 600).astype(float)
    logits = rng.normal(size=(600, 4)) + 1.5 * np.eye(4)[y.astype(int)]
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    curves, skipped, rows = plots.one_vs_rest_roc(y, scores, [0.0, 1.0, 2.0, 3.0])
    assert skipped == [] and rows == 600
    per_class = [auc for *_, auc in curves]
    for k, auc in enumerate(per_class):
        assert auc == pytest.approx(roc_auc_score(y == k, scores[:, k]))
    assert np.mean(per_class) == pytest.approx(
        roc_auc_score(y, scores, multi_class="ovr", average="macro"))
    assert_png(plots.roc_one_vs_rest_plot(y, scores, None, str(tmp_path / "ovr.png")))
    # A class never seen in y is skipped, not a crash; many classes draw the macro curve.
    curves, skipped, _ = plots.one_vs_rest_roc(np.where(y == 3, 0, y), scores)
    assert skipped == [3] and len(curves) == 3
    assert_png(plots.roc_one_vs_rest_plot(np.where(y == 3, 0, y), scores, None,
                                          str(tmp_path / "ovr3.png")))
    many = rng.integers(0, 15, 600).astype(float)
    assert_png(plots.roc_one_vs_rest_plot(many, rng.random((600, 15)), None,
                                          str(tmp_path / "ovr15.png")))
    assert_png(plots.roc_one_vs_rest_plot(np.zeros(5), rng.random((5, 2)), None,
                                          str(tmp_path / "none.png")))
    with pytest.raises(ValueError, match="rows × classes with 600 rows"):
        plots.one_vs_rest_roc(y, scores[:10])
    with pytest.raises(ValueError, match="3 labels for 4 score columns"):
        plots.one_vs_rest_roc(y, scores, [0, 1, 2])


def test_compression_plot_from_a_compression_report(tmp_path):
    from sparkml_aiaas.compress.api import CompressionReport

    report = CompressionReport(method="int8", weights="int8", source="a", output="b",
                               bytes_before=1000, bytes_after=260, ratio=3.8,
                               total_bytes_before=5000)  # no eval data: a note, not a crash
    assert_png(plots.compression_plot(report, str(tmp_path / "c.png")))


def test_plot_edge_cases_write_a_note_instead_of_crashing(tmp_path):
    # One class only: ROC/PR are undefined; the PNG carries a note.
    y = np.ones(50)
    score = np.linspace(0, 1, 50)
    assert_png(plots.roc_curve_plot(y, score, str(tmp_path / "roc.png")))
    assert_png(plots.pr_curve_plot(y, score, str(tmp_path / "pr.png")))
    assert_png(plots.loss_curve([], str(tmp_path / "empty.png")))
    assert_png(plots.loss_curve(None, str(tmp_path / "none.png")))
    assert_png(plots.loss_curve([float("nan")], str(tmp_path / "nan.png")))
    assert_png(plots.confusion_matrix_plot([], [], None, str(tmp_path / "cm.png")))
    assert_png(plots.residuals_plot([], [], str(tmp_path / "res.png")))
    assert_png(plots.compression_plot([], str(tmp_path / "c.png")))
    with pytest.raises(ValueError, match="y has 3 values"):
        plots.roc_curve_plot([0, 1, 1], [0.1, 0.2], str(tmp_path / "bad.png"))


def test_html_report_embeds_every_png_and_escapes_text(tmp_path):
    pngs = [plots.loss_curve([2.0, 1.0], str(tmp_path / "a.png")),
            plots.residuals_plot([1.0, 2.0, 3.0], [1.1, 1.9, 3.2], str(tmp_path / "b.png"))]
    path = write_report(str(tmp_path / "out"), "Run <b>1</b>",
                        {"<script>alert(1)</script>": 0.5, "auc": 0.987654321},
                        [("loss & co", pngs[0]), ("residuals", pngs[1])],
                        sections=[("Data <source>", {"path": "/x/<y>.csv"})],
                        config={"model": {"type": "logistic_regression"}},
                        model_path="/models/m")
    assert path == os.path.join(str(tmp_path / "out"), "report.html")
    assert os.listdir(tmp_path / "out") == ["report.html"]  # atomic: no temporary left
    text = open(path, encoding="utf-8").read()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Run &lt;b&gt;1&lt;/b&gt;" in text and "loss &amp; co" in text
    assert "/x/&lt;y&gt;.csv" in text and "logistic_regression" in text and "/models/m" in text
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == 2
    for data, png in zip(embedded, pngs):
        assert base64.b64decode(data) == open(png, "rb").read()
    # Self-contained: no external references.
    assert not re.search(r'(src|href)="(?!data:)', text)


def _png_names(text):
    return [base64.b64decode(d)[:8] for d in
            re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)', text)]


def _binary_csv(tmp_path, n=300):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, 2))
    cls = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    positive = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 0.5, n) > 0).astype(int)
    csv = tmp_path / "data.csv"
    csv.write_text("id,a,b,cls,positive\n" + "".join(
        f"{i},{a:.6f},{b:.6f},{c},{p}\n" for i, ((a, b), c, p) in enumerate(zip(X, cls, positive))))
    return csv


def test_training_job_writes_a_classifier_report(spark, tmp_path, capsys):
    """Through the CLI, as tests/test_cli.py does: plots, report.html, and its printed path."""
    from sparkml_aiaas.cli import main

    csv = _binary_csv(tmp_path)
    config = tmp_path / "train.yaml"
    config.write_text(f"""
input: {{path: {csv}, schema: "id INT, a DOUBLE, b DOUBLE, cls INT, positive INT"}}
split: {{key: id, test_fraction: 0.3}}
model: {{label_col: positive, features: [a, b], params: {{max_iter: 30}}}}
output: {{model_path: {tmp_path / 'model'}, metrics_path: {tmp_path / 'metrics.json'}}}
""")
    status = main(["train", "--config", str(config)])
    out = capsys.readouterr().out
    assert status == 0, out
    report_dir = tmp_path / "report"
    html_path = str(report_dir / "report.html")
    lines = out.splitlines()
    trained = [i for i, line in enumerate(lines) if line.startswith("trained ")]
    assert trained and lines[trained[0] + 1] == f"report {html_path}"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["report_path"] == html_path and metrics["metrics"]["auc"] > 0.8
    for name in ("loss_curve", "roc_curve", "pr_curve", "confusion_matrix"):
        assert_png(str(report_dir / f"{name}.png"))
    text = open(html_path, encoding="utf-8").read()
    names = _png_names(text)
    assert len(names) == 4 and all(n == PNG_SIGNATURE for n in names)
    for caption in ("ROC curve", "Precision-recall curve", "Confusion matrix", "Training"):
        assert caption in text
    assert f"{metrics['metrics']['auc']:.6g}" in text and "positive" in text
    assert "rows plotted" in text
    # Only the report and its plots: no temporary files left behind.
    assert sorted(os.listdir(report_dir)) == ["confusion_matrix.png", "loss_curve.png",
                                              "pr_curve.png", "report.html", "roc_curve.png"]


def test_multiclass_training_report_has_a_confusion_matrix(spark, tmp_path):
    from sparkml_aiaas.config import TrainJobConfig
    from sparkml_aiaas.pipeline import run_training

    csv = _binary_csv(tmp_path)
    config = TrainJobConfig.model_validate({
        "input": {"path": str(csv), "schema": "id INT, a DOUBLE, b DOUBLE, cls INT, positive INT"},
        "model": {"label_col": "cls", "features": ["a", "b"], "params": {"max_iter": 30}},
        "output": {"model_path": str(tmp_path / "m"), "report_dir": str(tmp_path / "rep")},
    })
    report = run_training(spark, config)
    assert report.report_path == str(tmp_path / "rep" / "report.html")
    assert sorted(os.listdir(tmp_path / "rep")) == ["confusion_matrix.png", "loss_curve.png",
                                                    "report.html", "roc_one_vs_rest.png"]
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "ROC curves, each class against the rest" in html


def test_training_report_path_on_train_report_and_regression_residuals(spark, tmp_path):
    from sparkml_aiaas.config import TrainJobConfig
    from sparkml_aiaas.pipeline import run_training

    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 2))
    y = 1.5 * X[:, 0] - 2.0 * X[:, 1] + rng.normal(0, 0.1, 300)
    csv = tmp_path / "reg.csv"
    csv.write_text("id,a,b,y\n" + "".join(f"{i},{a:.6f},{b:.6f},{t:.6f}\n"
                                          for i, ((a, b), t) in enumerate(zip(X, y))))
    config = TrainJobConfig.model_validate({
        "input": {"path": str(csv), "schema": "id INT, a DOUBLE, b DOUBLE, y DOUBLE"},
        "split": {"key": "id", "test_fraction": 0.25},
        "model": {"type": "linear_regression", "label_col": "y", "features": ["a", "b"]},
        "output": {"model_path": str(tmp_path / "model")},  # no metrics_path
    })
    report = run_training(spark, config)
    # Without metrics_path the report goes to <model_path>_report.
    assert report.report_path == str(tmp_path / "model_report" / "report.html")
    assert os.path.isfile(report.report_path)
    assert_png(str(tmp_path / "model_report" / "residuals.png"))
    assert_png(str(tmp_path / "model_report" / "loss_curve.png"))
    assert not (tmp_path / "model_report" / "roc_curve.png").exists()
    text = open(report.report_path, encoding="utf-8").read()
    assert len(_png_names(text)) == 2 and "Residuals" in text and "rmse" in text

    disabled = config.model_copy(update={"output": config.output.model_copy(
        update={"report": False, "model_path": str(tmp_path / "model2")})})
    assert run_training(spark, disabled).report_path is None
    assert not (tmp_path / "model2_report").exists()


def test_sample_is_bounded(spark):
    from sparkml_aiaas.reports.training import collect_scored_sample

    frame = spark.range(1000).selectExpr("CAST(id % 2 AS DOUBLE) AS label",
                                         "CAST(id % 2 AS DOUBLE) AS prediction",
                                         "array(0.0, rand(1)) AS probability")
    sample = collect_scored_sample(frame, "label", "prediction", "probability", max_rows=100)
    assert sample["rows_total"] == 1000 and sample["rows_sampled"] == 100
    assert sample["y"].shape == sample["score"].shape == (100,)


def test_compression_report_from_a_report_object(tmp_path):
    from sparkml_aiaas.compress.api import CompressionReport
    from sparkml_aiaas.reports.compression import write_compression_report

    report = CompressionReport(method="prune+int8", weights="sparse-int8", source="/m/<dense>",
                               output="/m/small", bytes_before=40000, bytes_after=6000,
                               ratio=6.67, total_bytes_before=45000, metric="accuracy",
                               metric_before=0.97, metric_after=0.95, eval_rows=450,
                               fine_tune_epochs=2, fine_tune_losses=[0.4, 0.2])
    path = write_compression_report(report, str(tmp_path / "rep"), {"sparsity": 0.6})
    text = open(path, encoding="utf-8").read()
    assert len(_png_names(text)) == 1 and "/m/&lt;dense&gt;" in text and "metric_after" in text
    assert "epoch 2" in text and "sparsity" in text
    assert_png(str(tmp_path / "rep" / "compression.png"))


def test_cli_compress_report_dir(tmp_path, capsys):
    pytest.importorskip("torch")
    from sparkml_aiaas.cli import main
    from sparkml_aiaas.core.torch_nets import build_network
    from sparkml_aiaas.models.torch import TorchClassificationModel

    spec = {"type": "mlp", "input_size": 8, "hidden_layers": [16], "output_size": 3}
    model = TorchClassificationModel.from_module(spec, build_network(spec, seed=0),
                                                 featuresCol="features", inputShape=[8])
    model.write().save(str(tmp_path / "dense"))
    status = main(["compress", "--model", str(tmp_path / "dense"), "--out", str(tmp_path / "c"),
                   "--report-dir", str(tmp_path / "rep"), "--quiet"])
    out = capsys.readouterr().out
    assert status == 0, out
    html_path = str(tmp_path / "rep" / "report.html")
    assert out.splitlines()[-1] == f"report {html_path}"
    assert out.splitlines()[-2].startswith("compressed ")
    assert len(_png_names(open(html_path, encoding="utf-8").read())) == 1
