"""``sparkml-aiaas models list|describe|register|reproduce|set-alias|delete``: the registry
on the command line.

Wired into :mod:`sparkml_aiaas.cli`; errors are :class:`SparkmlAiaasError`
subclasses, so the CLI prints one line and exits 2.  ``--json`` prints
machine-readable output instead of text.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List

REGISTRY_ENV = "SPARKML_AIAAS_REGISTRY"


def add_models_parser(commands) -> argparse.ArgumentParser:
    """Add the ``models`` command (with its sub-commands) to the CLI's subparsers."""
    models = commands.add_parser("models", help="register, list, describe, reproduce, alias "
                                 "and delete model versions")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def common(p):
        p.add_argument("--registry", default=os.environ.get(REGISTRY_ENV), metavar="ROOT",
                       help=f"registry root folder or file: URI (default ${REGISTRY_ENV})")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        p.add_argument("--key-file", help="registry signing key file (default: the "
                       "SPARKML_AIAAS_REGISTRY_KEY environment variable when set)")
        p.add_argument("--quiet", action="store_true",
                       help="print only the result (no progress lines)")

    p = actions.add_parser("list", help="list versions (of one model, or of all)")
    common(p)
    p.add_argument("name", nargs="?", help="model name (default: all models)")

    p = actions.add_parser("describe", help="verify and show one version")
    common(p)
    p.add_argument("ref", help="name, name/VERSION or name@ALIAS")

    p = actions.add_parser("register", help="register a saved model folder as a new version")
    common(p)
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="a model a train job (or model.save) wrote; a saved PipelineModel of "
                   "a preprocessor and a model is registered as a bundle")
    p.add_argument("--name", required=True, help="model name (the version number is the next)")
    p.add_argument("--alias", help="point this alias (e.g. production) at the new version")
    p.add_argument("--description")

    p = actions.add_parser("reproduce", help="retrain a version as recorded and compare it "
                           "array by array (exit 0 identical, 1 different, 2 cannot try)")
    common(p)
    p.add_argument("ref", help="name, name/VERSION or name@ALIAS")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the retrained model here (default: a temporary folder)")
    p.add_argument("--allow-environment-change", action="store_true",
                   help="retrain even when the code or a library that decides the bits is not "
                   "the recorded one, to see the difference")
    p.add_argument("--master", help="Spark master for the session (default local[*])")
    p.add_argument("--remote", metavar="sc://HOST:PORT",
                   help="retrain on a Spark Connect server (default: $SPARK_REMOTE)")

    p = actions.add_parser("set-alias", help="point an alias (e.g. production) at a version")
    common(p)
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version")

    p = actions.add_parser("delete", help="delete a version (its number is never reused)")
    common(p)
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--force", action="store_true",
                   help="also delete when aliases point at it (removes those aliases)")
    return models


def _registry(args):
    from sparkml_aiaas.errors import ConfigError
    from sparkml_aiaas.registry import ModelRegistry

    if not args.registry:
        raise ConfigError(f"give the registry root with --registry ROOT (or set {REGISTRY_ENV})")
    root = str(args.registry)
    if "://" in root and not root.startswith("file:"):
        # hdfs://, viewfs://...: the registry reaches Hadoop's FileSystem through a local
        # Spark session's JVM (started only for such roots; local registries need no Spark).
        from sparkml_aiaas.session import get_spark

        get_spark("sparkml_aiaas-models")
    return ModelRegistry(root, key_file=args.key_file)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _summary(mv) -> Dict[str, Any]:
    meta = mv.metadata
    return {"name": mv.name, "version": mv.version, "ref": mv.ref, "digest": mv.digest,
            "aliases": mv.aliases, "created_at": meta.get("created_at"),
            "metrics": meta.get("metrics") or {}, "description": meta.get("description"),
            "path": mv.path}


def _format_metrics(metrics: Dict[str, Any], limit: int = 3) -> str:
    items = []
    for key, value in list(metrics.items())[:limit]:
        items.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(items)


def _list(args) -> int:
    versions = _registry(args).list(args.name)
    if args.json:
        _print_json([_summary(mv) for mv in versions])
        return 0
    if not versions:
        print("no registered models")
        return 0
    rows: List[List[str]] = [["NAME", "VERSION", "CREATED", "ALIASES", "DIGEST", "METRICS"]]
    for mv in versions:
        rows.append([mv.name, str(mv.version), str(mv.metadata.get("created_at", ""))[:19],
                     ",".join(mv.aliases) or "-", mv.digest[:12],
                     _format_metrics(mv.metadata.get("metrics") or {}) or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _describe(args) -> int:
    info = _registry(args).describe(args.ref)
    if args.json:
        _print_json(info)
        return 0
    model = info.get("model") or {}
    lines = [
        f"{info['ref']}" + (f"  ({', '.join(info['aliases'])})" if info["aliases"] else ""),
        f"  description     {info.get('description') or '-'}",
        f"  created_at      {info.get('created_at')}",
        f"  class           {model.get('class')}",
        f"  model_id        {model.get('model_id')}",
        f"  digest          {info.get('digest')}",
        f"  path            {info.get('path')}",
        f"  verified        checksums of {len(info.get('files') or {})} files OK; signature "
        + ("OK" if info.get("signature_verified") else
           ("present, not checked (no key configured)" if info.get("signed") else "none")),
        f"  package         sparkml_aiaas {info.get('package_version')}, git "
        f"{info.get('git_commit') or 'unknown'}",
        f"  data_source     {json.dumps(info.get('data_source'))}",
    ]
    inputs = (info.get("input_signature") or {}).get("inputs") or []
    lines.append("  inputs          " + (", ".join(f"{i.get('name')}:{i.get('type')}"
                                                  for i in inputs) or "-"))
    if info.get("preprocessor"):
        lines.append(f"  preprocessor    digest {info['preprocessor'].get('digest')}")
    metrics = info.get("metrics") or {}
    lines.append("  metrics         " + (_format_metrics(metrics, limit=len(metrics)) or "-"))
    lines.append("  reproducible    " + _reproducible(info))
    last = info.get("last_reproduction")
    lines.append("  reproduced      " + (
        f"{str(last.get('started_at', ''))[:19]}Z {last.get('status')}: {last.get('summary')}"
        if last else "never"))
    params = info.get("params") or {}
    lines.append("  params          " + (", ".join(f"{k}={json.dumps(v)}"
                                                  for k, v in sorted(params.items())) or "-"))
    print("\n".join(lines))
    return 0


def _reproducible(info: Dict[str, Any]) -> str:
    provenance = info.get("provenance") or {}
    if not provenance:
        return "no (no train-job provenance recorded)"
    source = provenance.get("input") or {}
    what = (f"Delta {source.get('path')} version {source.get('delta_version')}"
            if source.get("format") == "delta" else
            f"{len((source.get('manifest') or {}).get('files') or [])} file(s) under "
            f"{source.get('path')}")
    env = provenance.get("environment") or {}
    return (f"yes: {what}, seed {provenance.get('seed')}, {provenance.get('blocks')} blocks, "
            f"numpy {env.get('numpy')}, pyspark {env.get('pyspark')}, {env.get('blas')}")


def _register(args) -> int:
    from sparkml_aiaas.errors import ConfigError

    if not os.path.isdir(args.model_dir):
        raise ConfigError(f"no saved model at {args.model_dir!r}: the folder does not exist "
                          "(train one with `sparkml-aiaas train`, or save one with "
                          "model.write().save(path))")
    registry = _registry(args)
    if args.alias is not None:
        from sparkml_aiaas.registry import validate_alias

        validate_alias(args.alias)  # before anything is written
    version = registry.register(os.path.abspath(args.model_dir), args.name,
                                description=args.description)
    if args.alias is not None:
        registry.set_alias(args.name, args.alias, version)
    mv = registry.resolve(f"{args.name}/{version}")
    reproducible = bool(mv.metadata.get("provenance"))
    if args.json:
        _print_json({**_summary(mv), "reproducible": reproducible})
    else:
        alias = f" ({args.name}@{args.alias})" if args.alias else ""
        print(f"registered {mv.ref}{alias} from {os.path.abspath(args.model_dir)}; digest "
              f"{mv.digest[:12]}; " + ("reproducible: provenance recorded" if reproducible
                                       else "not reproducible: no train-job provenance"))
    return 0


def _reproduce(args) -> int:
    registry = _registry(args)
    spark = None
    if args.master or args.remote:
        from sparkml_aiaas.session import get_spark

        spark = get_spark("sparkml_aiaas-reproduce", master=args.master, remote=args.remote)
    outcome = registry.reproduce(args.ref, spark=spark, workdir=args.workdir,
                                 allow_environment_change=args.allow_environment_change)
    if args.json:
        _print_json({**outcome.to_json(), "exit_code": outcome.exit_code})
    else:
        print(outcome.summary)
    return outcome.exit_code


def _set_alias(args) -> int:
    from sparkml_aiaas.registry.core import _validate_version

    version = _validate_version(args.version)  # ASCII digits only: never int() on raw text
    registry = _registry(args)
    previous = registry.set_alias(args.name, args.alias, version)
    if args.json:
        _print_json({"name": args.name, "alias": args.alias, "version": version,
                     "previous": previous})
    else:
        was = f" (was {args.name}/{previous})" if previous is not None else ""
        print(f"{args.name}@{args.alias} -> {args.name}/{version}{was}")
    return 0


def _delete(args) -> int:
    from sparkml_aiaas.registry.core import _validate_version

    version = _validate_version(args.version)
    _registry(args).delete(args.name, version, force=args.force)
    if args.json:
        _print_json({"name": args.name, "version": version, "deleted": True})
    else:
        print(f"deleted {args.name}/{version}")
    return 0


_ACTIONS = {"list": _list, "describe": _describe, "register": _register,
            "reproduce": _reproduce, "set-alias": _set_alias, "delete": _delete}


def run_models(args) -> int:
    """Run a parsed ``models`` command; returns the exit status."""
    return _ACTIONS[args.models_command](args)
