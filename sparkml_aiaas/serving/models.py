"""The served models: each reference, the predictor of the version it resolves to now.

:class:`ModelManager` loads every served reference (``NAME@ALIAS``, ``NAME/VERSION``
or ``NAME``) from the registry and follows alias moves; :meth:`ModelManager.get` is
what every protocol calls to find a model (``oip.ModelUnavailable`` when it cannot).
This module imports no web framework.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from sparkml_aiaas.errors import ConfigError, ModelFormatError, SparkmlAiaasError
from sparkml_aiaas.models.trust import trusted
from sparkml_aiaas.registry import ModelNotFoundError, ModelRegistry, parse_ref
from sparkml_aiaas.serving.oip import ModelUnavailable

__all__ = ["ModelManager", "ServedModel"]

logger = logging.getLogger("sparkml_aiaas.serving")


@dataclass
class ServedModel:
    """One served reference and the predictor of the version it currently resolves to."""

    ref: str
    name: str
    alias: Optional[str]
    version: Optional[int] = None
    digest: str = ""
    aliases: List[str] = field(default_factory=list)
    predictor: Any = None
    signature: List[Dict[str, str]] = field(default_factory=list)
    outputs: List[Dict[str, str]] = field(default_factory=list)
    error: Optional[str] = None  # the full reason, for the server log only (may name paths)
    reason: Optional[str] = None  # a short reason a client may see (503 body)
    checked_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def signature_of(predictor) -> List[Dict[str, str]]:
    meta = getattr(predictor, "metadata", None) or {}
    inputs = (meta.get("signature") or {}).get("inputs") or []
    if inputs:
        return [{"name": str(c["name"]), "type": str(c.get("type", "unknown"))} for c in inputs]
    return [{"name": c, "type": "unknown"} for c in predictor.input_columns]


class ModelManager:
    """Loads the served models and follows alias moves (checked every ``check_seconds``)."""

    def __init__(self, registry: ModelRegistry, refs: Sequence[str], check_seconds: float = 2.0,
                 trusted_factories=None):
        self.registry = registry
        self.check_seconds = check_seconds
        # Torch factories the served models may name (resolved once, with the environment).
        self.trusted_factories = trusted(trusted_factories)
        self.models: Dict[str, ServedModel] = {}
        for ref in refs:
            name, version, alias = parse_ref(ref)
            if name in self.models:
                raise ConfigError(f"model {name!r} is served twice ({self.models[name].ref!r} "
                                  f"and {ref!r}); serve one reference per name")
            self.models[name] = ServedModel(ref=ref, name=name, alias=alias)
        if not self.models:
            raise ConfigError("no model to serve: give at least one NAME@ALIAS or NAME/VERSION")

    def _target(self, served: ServedModel) -> int:
        """The version ``served.ref`` resolves to now (reads one small file)."""
        name, version, alias = parse_ref(served.ref)
        if alias is not None:
            aliases = self.registry.aliases(name)
            if alias not in aliases:
                raise ModelNotFoundError(f"{name} has no alias {alias!r}")
            return aliases[alias]
        if version is not None:
            return version
        versions = self.registry.versions(name)
        if not versions:
            raise ModelNotFoundError(f"no model named {name!r}")
        return versions[-1]

    def _load(self, served: ServedModel, version: int) -> None:
        mv = self.registry.resolve(f"{served.name}/{version}")  # verifies every checksum
        predictor = self.registry.load_predictor(mv.ref, self.trusted_factories)
        served.predictor = predictor
        served.version = mv.version
        served.digest = mv.digest
        served.aliases = list(mv.aliases)
        served.signature = signature_of(predictor)
        served.outputs = [{"name": n, "type": t} for n, t in predictor.output_columns]
        served.error = served.reason = None
        logger.info("serving %s as %s (digest %s)", served.ref, mv.ref, mv.digest[:12])

    def refresh(self, served: ServedModel, force: bool = False) -> None:
        """Reload ``served`` when its reference now points at another version."""
        now = time.monotonic()
        if not force and served.predictor is not None and \
                now - served.checked_at < self.check_seconds:
            return
        with served.lock:
            if not force and served.predictor is not None and \
                    time.monotonic() - served.checked_at < self.check_seconds:
                return  # another request just checked
            try:
                target = self._target(served)
                if force or served.predictor is None or target != served.version:
                    self._load(served, target)
            except Exception as exc:  # noqa: BLE001 - keep serving the loaded version
                error = f"{type(exc).__name__}: {exc}"
                # Retried every check_seconds (probes, the gRPC health watch): the same
                # failure again is logged at DEBUG, so the log says it once, not forever.
                repeated = error == served.error
                served.error, served.reason = error, short_reason(exc)
                if repeated:
                    logger.debug("still cannot load %s: %s", served.ref, error)
                elif isinstance(exc, SparkmlAiaasError):  # expected: the message says it all
                    logger.error("cannot load %s: %s", served.ref, error)
                else:
                    logger.exception("cannot load %s", served.ref)
            served.checked_at = time.monotonic()

    def load_all(self, force: bool = False) -> None:
        for served in self.models.values():
            self.refresh(served, force=force)

    def ready(self) -> bool:
        return all(s.predictor is not None for s in self.models.values())

    def probe(self) -> bool:
        """:meth:`ready`, after re-checking the models not checked for ``check_seconds``.

        For unauthenticated readiness probes: a model that failed to load is retried at
        most every ``check_seconds`` here (a request for it retries at once), so a flood
        of probes cannot make the server re-verify files on every one."""
        for served in self.models.values():
            if time.monotonic() - served.checked_at >= self.check_seconds:
                self.refresh(served)
        return self.ready()

    def get(self, name: str) -> ServedModel:
        """The served model ``name``, its alias re-checked; ModelUnavailable 404 when no
        such model is served, 503 when it is not loaded."""
        served = self.models.get(name)
        if served is None:
            raise ModelUnavailable(404, f"model {name!r} is not served here")
        self.refresh(served)
        if served.predictor is None:  # served.error (paths, details) is in the log only
            raise ModelUnavailable(503, f"model {name!r} is not available: "
                                        f"{served.reason or 'it is not loaded'}")
        return served


def short_reason(exc: BaseException) -> str:
    """Why a model could not be loaded, in words a client may see: no path, no detail (the
    full message is in the server log)."""
    if isinstance(exc, ModelNotFoundError):
        return "its version or alias is not in the registry"
    if isinstance(exc, ModelFormatError):
        return "its files failed verification"
    return "it could not be loaded"


def check_served_refs(registry, refs: Sequence[str]) -> None:
    """ConfigError, in one line that says how to fix it, when the registry, a model, a
    version or an alias that ``serve`` is told to serve does not exist.

    ``serve`` calls this before it starts: a typo'd name or an alias never set is a
    mistake to fix now, not a 503 for every request.  (:class:`ModelManager` itself stays
    lenient, so that a running server keeps serving while an alias is being moved.)"""
    root = registry.root
    fs = registry.storage
    if not fs.isdir(root):
        raise ConfigError(
            f"the registry folder {root!r} does not exist; create it by registering a "
            f"model: sparkml-aiaas models register MODEL_DIR --registry {root} --name NAME "
            "--alias production")
    names = registry.names()
    for ref in refs:
        name, version, alias = parse_ref(ref)
        if name not in names:
            known = f" (it holds: {', '.join(names)})" if names else " (it holds no model)"
            raise ConfigError(
                f"no model named {name!r} in the registry {root!r}{known}; register one: "
                f"sparkml-aiaas models register MODEL_DIR --registry {root} --name {name}"
                + (f" --alias {alias}" if alias else ""))
        versions = registry.versions(name)
        if version is not None and version not in versions:
            raise ConfigError(f"{name} has no version {version} in the registry {root!r} "
                              f"(its versions: {', '.join(map(str, versions)) or 'none'})")
        if alias is not None:
            aliases = registry.aliases(name)
            if alias not in aliases:
                have = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
                latest = versions[-1] if versions else "VERSION"
                raise ConfigError(
                    f"{name} has no alias {alias!r} in the registry {root!r} (versions: "
                    f"{', '.join(map(str, versions)) or 'none'}; aliases: {have}); set it: "
                    f"sparkml-aiaas models set-alias --registry {root} {name} {alias} {latest}")
