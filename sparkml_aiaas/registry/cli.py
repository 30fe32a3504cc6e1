"""``sparkml-aiaas models list|describe|set-alias|delete``: the registry on the command line.

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
    models = commands.add_parser("models", help="list, describe, alias and delete registered "
                                 "model versions")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def common(p):
        p.add_argument("--registry", default=os.environ.get(REGISTRY_ENV), metavar="ROOT",
                       help=f"registry root folder or file: URI (default ${REGISTRY_ENV})")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        p.add_argument("--key-file", help="registry signing key file (default: the "
                       "SPARKML_AIAAS_REGISTRY_KEY environment variable when set)")
        p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)

    p = actions.add_parser("list", help="list versions (of one model, or of all)")
    common(p)
    p.add_argument("name", nargs="?", help="model name (default: all models)")

    p = actions.add_parser("describe", help="verify and show one version")
    common(p)
    p.add_argument("ref", help="name, name/VERSION or name@ALIAS")

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
    params = info.get("params") or {}
    lines.append("  params          " + (", ".join(f"{k}={json.dumps(v)}"
                                                  for k, v in sorted(params.items())) or "-"))
    print("\n".join(lines))
    return 0


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


_ACTIONS = {"list": _list, "describe": _describe, "set-alias": _set_alias, "delete": _delete}


def run_models(args) -> int:
    """Run a parsed ``models`` command; returns the exit status."""
    return _ACTIONS[args.models_command](args)
