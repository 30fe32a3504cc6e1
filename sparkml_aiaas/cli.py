"""``sparkml-aiaas`` command line: a thin shell over :mod:`sparkml_aiaas.pipeline`.

Expected user errors (bad config, bad data, missing files) print one line
``error: ...`` on stderr and exit with status 2; anything else is a bug and
keeps its traceback.  ``jobs/*.py`` call :func:`main` too, so spark-submit and
the CLI share one code path.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import List, Optional, Sequence

from sparkml_aiaas import __version__
from sparkml_aiaas.errors import SparkmlAiaasError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_common(parser: argparse.ArgumentParser, config_required: bool) -> None:
    parser.add_argument("--config", required=config_required, metavar="YAML",
                        help="job configuration file (conf/*.yaml)")
    parser.add_argument("--master", help="Spark master for a session we start (default local[*])")
    parser.add_argument("--remote", metavar="sc://HOST:PORT",
                        help="run on a Spark Connect server (default: $SPARK_REMOTE)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.params.reg_param=0.1")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def _ascii_int(text: str) -> int:
    """argparse type: a whole number in ASCII digits (``int()`` alone also takes ``٨٠``)."""
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise argparse.ArgumentTypeError(f"expected a whole number (ASCII digits), got {text!r}")
    return int(text)


def _ascii_number(text: str) -> float:
    """argparse type: a decimal number in ASCII (``float()`` alone also takes ``١.٥``)."""
    if not re.fullmatch(r"-?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})"
                        r"(?:[eE][-+]?[0-9]{1,3})?", text):
        raise argparse.ArgumentTypeError(f"expected a number (ASCII digits), got {text!r}")
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparkml-aiaas",
        description="Spark-native ML pipelines: ingest, train, score.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quickstart = commands.add_parser(
        "quickstart", help="run the whole pipeline on a bundled data set")
    _add_common(quickstart, config_required=False)
    quickstart.add_argument("--workdir", help="where data, model and outputs go "
                            "(default ./sparkml_aiaas_work/quickstart)")

    ingest = commands.add_parser(
        "ingest", help="check a source against its schema; write accepted rows and the quarantine")
    _add_common(ingest, config_required=True)
    ingest.add_argument("--input", help="override input.path")
    ingest.add_argument("--output", help="override output.path")

    train = commands.add_parser("train", help="ingest, train, evaluate and save a model")
    _add_common(train, config_required=True)
    train.add_argument("--input", help="override input.path")
    train.add_argument("--model-path", help="override output.model_path")

    score = commands.add_parser("score", help="batch-score input with a saved model")
    _add_common(score, config_required=True)
    score.add_argument("--model-path", help="override model_path")
    score.add_argument("--input", help="override input.path")
    score.add_argument("--output", help="override output.path")
    score.add_argument("--model-name", help="override model_name")
    score.add_argument("--model", help="registry reference (name@alias, name/VERSION, name); "
                       "needs --registry or registry: in the config")
    score.add_argument("--registry", help="model registry root")
    score.add_argument("--run-id", help="run id (default: derived from model and input)")
    score.add_argument("--incremental", action="store_true", default=None,
                       help="score only input files new since the last successful run")
    score.add_argument("--batch-size", type=int, help="rows per Arrow batch")

    from sparkml_aiaas.registry.cli import add_models_parser

    add_models_parser(commands)

    compress = commands.add_parser(
        "compress", help="int8-quantize and/or prune a saved torch model into a smaller artifact")
    compress.add_argument("--model", required=True, metavar="PATH",
                          help="saved (dense) torch model directory")
    compress.add_argument("--out", required=True, metavar="PATH",
                          help="where the compressed model is written")
    compress.add_argument("--method", default="int8",
                          help="int8 (default), prune or prune+int8")
    compress.add_argument("--sparsity", type=float, default=0.5,
                          help="fraction of each Conv/Linear weight pruned, in [0, 1)")
    compress.add_argument("--structured", action="store_true",
                          help="prune whole output channels instead of single weights")
    compress.add_argument("--eval-data", metavar="PATH",
                          help="labelled data (Parquet, CSV) for accuracy/AUC and throughput")
    compress.add_argument("--label-col", default="label", help="label column (default label)")
    compress.add_argument("--fine-tune-data", metavar="PATH",
                          help="labelled data for a few epochs of fine-tuning after pruning")
    compress.add_argument("--fine-tune-epochs", type=int, default=2)
    compress.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    compress.add_argument("--report-dir", metavar="DIR",
                          help="also write compression.png (size/accuracy) and report.html here")
    compress.add_argument("--trust-factory", dest="trusted_factories", action="append",
                          default=[], metavar="NAME",
                          help="a torch network factory 'pkg.module:function' the model may "
                               "name; repeatable (also: SPARKML_AIAAS_TRUSTED_FACTORIES)")
    compress.add_argument("--quiet", action="store_true", help="print only the summary")

    serve = commands.add_parser(
        "serve", help="serve registered models over an authenticated REST API (uvicorn) and, "
                      "with --grpc-port, the Open Inference Protocol's gRPC API")
    serve.add_argument("--registry", required=True, metavar="ROOT", help="model registry root")
    serve.add_argument("--model", dest="models", action="append", required=True,
                       metavar="REF", help="NAME@ALIAS, NAME/VERSION or NAME; repeatable")
    serve.add_argument("--tokens-file", required=True, metavar="FILE",
                       help="bearer tokens (sparkml-aiaas tokens create)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_ascii_int, default=8080, help="REST port (default 8080)")
    serve.add_argument("--grpc-port", type=_ascii_int, metavar="PORT",
                       help="also serve gRPC (inference.GRPCInferenceService, health, "
                            "reflection) on this port, same process and models (default: off)")
    serve.add_argument("--tls-cert", metavar="PEM",
                       help="serve REST and gRPC over TLS with this certificate (chain)")
    serve.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    serve.add_argument("--tls-client-ca", metavar="PEM",
                       help="require client certificates signed by this CA (mutual TLS)")
    serve.add_argument("--max-body-bytes", type=_ascii_int, default=1_000_000)
    serve.add_argument("--max-records", type=_ascii_int, default=10_000)
    serve.add_argument("--alias-check-seconds", type=_ascii_number, default=2.0,
                       help="how often a moved alias is looked for (default 2)")
    serve.add_argument("--rate-limit", type=_ascii_number, metavar="N",
                       help="requests per second allowed per token (bursts of N); more get "
                            "429 with Retry-After (default: no limit)")
    serve.add_argument("--failed-auth-limit", type=_ascii_number, default=5.0, metavar="N",
                       help="failed authentications per second allowed per client address "
                            "(default 5; 0 turns the throttle off); past the burst a token "
                            "the server does not know yet gets 429 before its scrypt check")
    serve.add_argument("--failed-auth-burst", type=_ascii_number, default=20.0, metavar="N",
                       help="failed authentications per client address allowed at once "
                            "(default 20)")
    serve.add_argument("--trust-factory", dest="trusted_factories", action="append",
                       default=[], metavar="NAME",
                       help="a torch network factory 'pkg.module:function' (or 'pkg.module:*') "
                            "the served models may name; repeatable (also: "
                            "SPARKML_AIAAS_TRUSTED_FACTORIES).  Models naming any other are "
                            "refused before anything is imported")
    serve.add_argument("--workers", type=_ascii_int, default=1, metavar="N",
                       help="worker processes sharing the ports (default 1); each keeps its "
                            "own model cache and rate limits (docs/serving.md)")
    serve.add_argument("--quiet", action="store_true", help="log warnings only")

    tokens = commands.add_parser("tokens", help="create or revoke serving API tokens")
    tokens_commands = tokens.add_subparsers(dest="tokens_command", required=True,
                                            metavar="ACTION")
    create = tokens_commands.add_parser("create", help="add a token; prints it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", dest="scopes", action="append", required=True,
                        choices=["predict", "admin"], help="repeatable")
    create.add_argument("--tokens-file", required=True, metavar="FILE")
    create.add_argument("--expires-in-days", type=_ascii_number, metavar="N",
                        help="the token stops working N days from now (default: never)")
    create.add_argument("--quiet", action="store_true",
                        help="print only the token (TOKEN=$(sparkml-aiaas tokens create ...))")
    revoke = tokens_commands.add_parser("revoke", help="remove a token")
    revoke.add_argument("--name", required=True)
    revoke.add_argument("--tokens-file", required=True, metavar="FILE")
    revoke.set_defaults(quiet=False)
    return parser


def _overrides(args: argparse.Namespace, flag_to_key: dict) -> List[str]:
    items = list(args.overrides)
    for flag, key in flag_to_key.items():
        value = getattr(args, flag, None)
        if value is not None:
            items.append(f"{key}={value}")
    if args.master is not None:
        items.append(f"spark.master={args.master}")
    if getattr(args, "remote", None) is not None:
        items.append(f"spark.remote={args.remote}")
    return items


def _configure_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # On a terminal the training bar (engine/progress.py) shows the iteration and objective:
    # the lines it shows are left out there; a file or a pipe gets every line.
    handler.addFilter(lambda record: not (getattr(record, "shown_on_progress_bar", False)
                                          and _isatty(handler.stream)))
    root = logging.getLogger("sparkml_aiaas")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.propagate = False


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _session(settings):
    from sparkml_aiaas.session import get_spark

    return get_spark(settings.app_name, master=settings.master, conf=settings.conf,
                     remote=settings.remote)


def _quickstart(args) -> int:
    from sparkml_aiaas.config import QuickstartConfig, load_config
    from sparkml_aiaas.pipeline import run_quickstart

    config = load_config(QuickstartConfig, args.config,
                         _overrides(args, {"workdir": "workdir"}))
    spark = _session(config.spark)
    from sparkml_aiaas.spark_env import describe_session

    print(f"sparkml_aiaas {__version__} quickstart on Spark {spark.version} "
          f"({describe_session(spark)})")
    report = run_quickstart(spark, config)
    train, score = report.train, report.score
    metrics = train.metrics
    print()
    print("summary")
    print(f"  data        {report.data_path}")
    print(f"  ingest      read {train.ingest_counts['read']}, accepted "
          f"{train.ingest_counts['accepted']}, rejected {train.ingest_counts['rejected']}")
    print(f"  split       train {train.train_rows}, test {train.test_rows}")
    print(f"  training    {train.iterations} iterations, {train.passes} passes, "
          f"final objective {train.final_objective:.6f}")
    print(f"  test        AUC {metrics['auc']:.4f}, accuracy {metrics['accuracy']:.4f}")
    print(f"  model       {train.model_path} (model_id {train.model_id}); reloaded: "
          f"{'identical predictions' if report.reloaded_identical else 'PREDICTIONS DIFFER'}")
    print(f"  metrics     {train.metrics_path}")
    if train.report_path:
        print(f"  report      {train.report_path}")
    print(f"  scored      {score.rows_out} rows → {score.output_path}")
    print("              columns: id, label, features..., rawPrediction, probability, "
          "prediction, model_name, model_version, scored_at, run_id")
    return 0 if report.reloaded_identical else 1


def _train(args) -> int:
    from sparkml_aiaas.config import TrainJobConfig, load_config
    from sparkml_aiaas.pipeline import run_training

    config = load_config(TrainJobConfig, args.config, _overrides(
        args, {"input": "input.path", "model_path": "output.model_path"}))
    spark = _session(config.spark)
    report = run_training(spark, config)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in report.metrics.items() if k != "rows")
    print(f"trained model_path={report.model_path} model_id={report.model_id} "
          f"iterations={report.iterations} {metrics} (on {report.evaluated_on})")
    if report.report_path:
        print(f"report {report.report_path}")
    if report.registered_ref:
        print(f"registered {report.registered_ref}")
    return 0


def _score(args) -> int:
    from sparkml_aiaas.config import ScoreJobConfig, load_config
    from sparkml_aiaas.pipeline import run_scoring

    flags = {"model_path": "model_path", "input": "input.path", "output": "output.path",
             "model_name": "model_name", "model": "model", "registry": "registry",
             "run_id": "run_id", "incremental": "incremental", "batch_size": "batch_size"}
    overrides = _overrides(args, flags)
    if args.model is not None:  # a registry reference on the command line wins
        overrides.append("model_path=null")
    elif args.model_path is not None:
        overrides.append("model=null")
    config = load_config(ScoreJobConfig, args.config, overrides)
    if config.model is not None:  # a bad registry reference fails before Spark starts
        from sparkml_aiaas.registry.core import parse_ref

        parse_ref(config.model)
    spark = _session(config.spark)
    report = run_scoring(spark, config)
    print(report.summary_line())
    return 0


def _ingest(args) -> int:
    from sparkml_aiaas.config import IngestJobConfig, load_config
    from sparkml_aiaas.data.ingest_job import run_ingest

    config = load_config(IngestJobConfig, args.config, _overrides(
        args, {"input": "input.path", "output": "output.path"}))
    spark = _session(config.spark)
    report = run_ingest(spark, config)
    print(report.summary_line())
    return 0


def _models(args) -> int:
    from sparkml_aiaas.registry.cli import run_models

    return run_models(args)


def _compress(args) -> int:
    from sparkml_aiaas.compress.api import compress_model

    fine_tune = None
    if args.fine_tune_data is not None:
        fine_tune = {"data": args.fine_tune_data, "epochs": args.fine_tune_epochs}
    report = compress_model(args.model, args.out, method=args.method, sparsity=args.sparsity,
                            structured=args.structured, fine_tune=fine_tune,
                            eval_data=args.eval_data, label_col=args.label_col,
                            overwrite=args.overwrite, trusted_factories=args.trusted_factories)
    if not args.quiet:
        print("\n".join(report.lines()))
    print(report.summary_line())
    if args.report_dir:
        from sparkml_aiaas.reports.compression import write_compression_report

        options = {k: v for k, v in vars(args).items() if k not in ("command", "quiet")}
        print(f"report {write_compression_report(report, args.report_dir, options)}")
    return 0


#: The serve flags a worker process needs to build the app (serving/worker.py).
_SERVE_OPTIONS = ("registry", "models", "tokens_file", "host", "grpc_port", "tls_cert",
                  "tls_key", "tls_client_ca", "max_body_bytes", "max_records",
                  "alias_check_seconds", "rate_limit", "trusted_factories",
                  "failed_auth_limit", "failed_auth_burst", "workers")


def _serve(args) -> int:
    try:
        import uvicorn

        from sparkml_aiaas.serving.worker import OPTIONS_ENV, build_app
    except ImportError as exc:
        raise SparkmlAiaasError(f"serving needs FastAPI and uvicorn ({exc}); "
                                "pip install 'sparkml_aiaas[serve]'") from None
    import json
    import logging.config

    from sparkml_aiaas.serving.logs import log_config
    from sparkml_aiaas.serving.tls import TLSConfig

    _check_ports(args)  # bad flags fail here, before any model loads or port opens
    if not 1 <= args.workers <= 64:
        raise SparkmlAiaasError(f"--workers {args.workers} is out of range (1-64)")
    tls = TLSConfig.from_flags(args.tls_cert, args.tls_key, args.tls_client_ca)

    # Redacting handlers from the first line on; uvicorn's access log (which writes query
    # strings, tokens included) is replaced by the app's own (serving/logs.py).
    config = log_config(args.quiet)
    logging.config.dictConfig(config)
    options = {name: getattr(args, name) for name in _SERVE_OPTIONS}
    from sparkml_aiaas.registry import ModelRegistry
    from sparkml_aiaas.serving.models import check_served_refs

    # A registry, model or alias that does not exist is refused now, in one line saying
    # how to create it, rather than served as 503s.
    check_served_refs(ModelRegistry(args.registry), args.models)
    # Built here even with workers: a missing registry, model or tokens file fails now,
    # in one line, not once per worker.
    app = build_app(options)
    run = dict(host=args.host, port=args.port, log_config=config, access_log=False,
               log_level="warning" if args.quiet else "info",
               **(tls.uvicorn_options() if tls is not None else {}))
    if args.workers == 1:
        uvicorn.run(app, **run)
        return 0
    del app  # each worker builds its own (serving/worker.py says what is per process)
    if args.grpc_port is not None:
        _check_port_free(args.host, args.grpc_port)  # the workers share it (SO_REUSEPORT)
    os.environ[OPTIONS_ENV] = json.dumps(options)
    uvicorn.run("sparkml_aiaas.serving.worker:app_from_environment", factory=True,
                workers=args.workers, **run)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """One line when ``host:port`` is taken: worker processes share a gRPC port with
    SO_REUSEPORT, which would otherwise not notice another server already on it."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SparkmlAiaasError(f"--grpc-port {port}: cannot listen on {host}:{port} "
                                    f"({exc.strerror or exc})") from None


def _check_ports(args) -> None:
    for flag, port in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if port is not None and not 1 <= port <= 65535:
            raise SparkmlAiaasError(f"{flag} {port} is out of range (1-65535)")
    if args.grpc_port is not None and args.grpc_port == args.port:
        raise SparkmlAiaasError(f"--grpc-port {args.grpc_port} is also --port; REST and gRPC "
                                "need a port each")


def _tokens(args) -> int:
    from sparkml_aiaas.serving.tokens import create_token, load_tokens, revoke_token

    if args.tokens_command == "create":
        token = create_token(args.tokens_file, args.name, args.scopes,
                             expires_in_days=args.expires_in_days)
        if args.quiet:
            print(token)
            return 0
        expiry = ""
        if args.expires_in_days is not None:
            (record,) = [r for r in load_tokens(args.tokens_file) if r.name == args.name]
            expiry = f", expires {record.expires}"
        print(f"created token {args.name!r} with scope(s) {','.join(sorted(set(args.scopes)))} "
              f"in {args.tokens_file}{expiry}; it is shown only once: {token}")
    else:
        revoke_token(args.tokens_file, args.name)
        print(f"revoked token {args.name!r} in {args.tokens_file}")
    return 0


_COMMANDS = {"quickstart": _quickstart, "ingest": _ingest, "train": _train, "score": _score,
             "models": _models, "compress": _compress, "serve": _serve, "tokens": _tokens}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the process exit status."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    try:
        return _COMMANDS[args.command](args)
    except SparkmlAiaasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ImportError as exc:
        from sparkml_aiaas.errors import missing_dependency

        error = missing_dependency(exc)
        if error is exc:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
