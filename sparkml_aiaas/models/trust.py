"""Which code a saved model may make this process import: the loading side decides.

A saved model is data: numbers in ``arrays.npz`` (read with ``allow_pickle=False``), JSON in
``metadata.json``, open formats beside them (XGBoost UBJ, skops with a type allowlist).  Two
things in it *name code*:

* a torch network built by a factory, ``{"type": "factory", "factory": "pkg.module:make_net",
  "kwargs": {...}}``: importing ``pkg.module`` runs its top level and ``make_net(**kwargs)``
  runs the function, so a metadata.json rewritten to ``"subprocess:getoutput"`` with
  ``{"cmd": ...}`` would run a shell command;
* the model class (``metadata["class"]``) the pyspark.ml reader instantiates.

Nothing checksums metadata.json against tampering (its sha256 entries cover the other files,
and whoever rewrites it rewrites them; an unsigned registry's hashes likewise), so neither
name is believed.  A model class must be one of :data:`ARTIFACT_CLASSES`, checked as a
string before anything is imported.  A factory is imported only when the caller's
:class:`Allowlist` holds it:

* ``trusted_factories=`` of the loading call (``load_predictor``, ``Model.load``,
  ``ModelRegistry.load_predictor``, ``score``, ``spark_udf``, ``compress_model``,
  ``create_app``; ``--trust-factory`` on the command line), plus the comma-separated
  :data:`ENV_VAR` of the loading process;
* a model built in this process by the user's own code (``fit``, ``from_module``, a
  ``TorchPredictor`` constructed directly) trusts exactly its own factory: the code that
  named it is the caller's.

An entry is an exact ``"pkg.module:qualname"`` or ``"pkg.module:*"``: every function or class
*defined in* ``pkg.module`` (checked after the import, so a name that the module merely
imports, ``pkg.module:os.system``, is refused; dunder attributes never match).  The built-in
``mlp`` and ``cnn`` architectures name no code and need nothing.

An :class:`Allowlist` object is final: passed to a loading call it is used as is, without the
environment.  That is how the driver's list travels to Spark executors with the model, so an
executor never trusts more than the driver did, whatever its own environment says.

This module imports no pyspark; :func:`Allowlist.resolve` is the only place where a name read
from an artifact is imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, FrozenSet, Iterable, Iterator, Optional, Tuple, Union

from sparkml_aiaas.errors import ConfigError, ModelFormatError

__all__ = ["ARTIFACT_CLASSES", "ENV_VAR", "Allowlist", "UntrustedCodeError",
           "check_artifact_class", "check_stage_class", "current", "loading", "trusted"]

#: Comma-separated entries trusted by every load in this process (jobs, servers).
ENV_VAR = "SPARKML_AIAAS_TRUSTED_FACTORIES"

#: Every class our artifact writer saves: the only ``metadata["class"]`` values the pyspark.ml
#: reader imports.  A test checks this against the classes the package defines.
ARTIFACT_CLASSES: FrozenSet[str] = frozenset({
    "sparkml_aiaas.models.linear.LogisticRegressionModel",
    "sparkml_aiaas.models.linear.LinearRegressionModel",
    "sparkml_aiaas.models.linear.LinearSVCModel",
    "sparkml_aiaas.models.sklearn.SklearnClassificationModel",
    "sparkml_aiaas.models.sklearn.SklearnRegressionModel",
    "sparkml_aiaas.models.torch.TorchClassificationModel",
    "sparkml_aiaas.models.torch.TorchRegressionModel",
    "sparkml_aiaas.models.xgboost.XGBoostClassificationModel",
    "sparkml_aiaas.models.xgboost.XGBoostRegressionModel",
    "sparkml_aiaas.models.xgboost.RandomForestClassificationModel",
    "sparkml_aiaas.models.xgboost.RandomForestRegressionModel",
    "sparkml_aiaas.preprocessing.stages.PreprocessorModel",
    "sparkml_aiaas.preprocessing.deidentify.Deidentifier",
})

#: pyspark.ml's own stage classes, as its Pipeline writer records them (a JVM class name is
#: mapped to ``pyspark.…`` by its reader): lower-case modules, one capitalized class.
_PYSPARK_STAGE = re.compile(r"^(?:pyspark|org\.apache\.spark)\.ml(?:\.[a-z][a-z0-9_]*)*"
                            r"\.[A-Z][A-Za-z0-9_]*$")

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_NAME = re.compile(rf"({_DOTTED}):({_DOTTED})")
_ENTRY = re.compile(rf"({_DOTTED}):({_DOTTED}|\*)")


class UntrustedCodeError(ModelFormatError):
    """A saved model names code (a torch network factory) the loading side has not allowlisted."""


def _shown(name: Any) -> str:
    text = repr(name)
    return text if len(text) <= 120 else text[:117] + "..."


def _split(name: Any) -> Optional[Tuple[str, str]]:
    match = _NAME.fullmatch(name) if isinstance(name, str) else None
    return (match.group(1), match.group(2)) if match else None


@dataclass(frozen=True)
class Allowlist:
    """The factories a loading call trusts (see the module doc); hashable and picklable.

    Parameters
    ----------
    entries : frozenset of str
        ``"pkg.module:qualname"`` or ``"pkg.module:*"``; build with :meth:`of`, which checks
        the syntax.
    """

    entries: FrozenSet[str] = frozenset()

    @classmethod
    def of(cls, names: Union[None, str, Iterable[str]]) -> "Allowlist":
        """An allowlist from a comma-separated string or an iterable of entries."""
        if names is None:
            return cls()
        if isinstance(names, Allowlist):
            return names
        items = names.split(",") if isinstance(names, str) else list(names)
        entries = set()
        for item in items:
            entry = item.strip() if isinstance(item, str) else item
            if entry == "":
                continue
            if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
                raise ConfigError(
                    f"trusted factory {_shown(entry)} is not 'pkg.module:function' or "
                    "'pkg.module:*'")
            entries.add(entry)
        return cls(frozenset(entries))

    @classmethod
    def of_spec(cls, spec: Any) -> "Allowlist":
        """Exactly the factory a network spec names (none for mlp/cnn): the trust of a model
        built from the caller's own code."""
        if isinstance(spec, dict) and spec.get("type") == "factory" and _split(spec.get("factory")):
            return cls(frozenset({spec["factory"]}))
        return cls()

    def union(self, other: Optional["Allowlist"]) -> "Allowlist":
        if not other or not other.entries:
            return self
        return Allowlist(self.entries | other.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, name: Any) -> bool:
        """Whether ``name`` may be imported: an exact entry, or (no dunder part) its module's
        wildcard."""
        parts = _split(name)
        if parts is None:
            return False
        if name in self.entries:
            return True
        module, qualname = parts
        return (f"{module}:*" in self.entries
                and not any(p.startswith("__") for p in qualname.split(".")))

    def check(self, name: Any, where: str = "a saved model") -> Tuple[str, str]:
        """``(module, qualname)`` of a trusted ``name``; :class:`UntrustedCodeError` otherwise.

        Only the string is looked at: nothing is imported.
        """
        if _split(name) is None:
            raise ModelFormatError(
                f"{where} names the network factory {_shown(name)}, which is not a "
                "'pkg.module:function' name; nothing was imported")
        if not self.allows(name):
            raise UntrustedCodeError(
                f"{where} names the network factory {_shown(name)}, which is not trusted: "
                f"loading never imports code a model names unless you allowlist it; if you "
                f"trust it, pass trusted_factories=[{_shown(name)}] (sparkml-aiaas serve "
                f"--trust-factory NAME) or add it to {ENV_VAR}")
        return _split(name)

    def resolve(self, name: Any, where: str = "a saved model") -> Callable:
        """The callable ``name`` names: checked (before any import), imported, and for a
        wildcard match verified to be defined in the trusted module."""
        module_name, qualname = self.check(name, where)
        try:
            target = importlib.import_module(module_name)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ModelFormatError(
                f"{where}: the trusted network factory {name!r} cannot be imported ({exc}); it "
                "must be an installed module (or shipped to the executors with "
                "SparkContext.addPyFile)") from None
        if name not in self.entries:  # matched by "module:*"
            defined = (getattr(target, "__module__", None), getattr(target, "__qualname__", None))
            if defined != (module_name, qualname):
                raise UntrustedCodeError(
                    f"{where} names {name!r}, which {module_name} imports from elsewhere "
                    f"({defined[0]}); '{module_name}:*' trusts only what that module defines")
        if not callable(target):
            raise ModelFormatError(f"{where}: network factory {name!r} is not callable")
        return target


def _environment(environ=None) -> Allowlist:
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    try:
        return Allowlist.of(value)
    except ConfigError as exc:
        raise ConfigError(f"{ENV_VAR}: {exc}") from None


def trusted(names: Union[None, str, Iterable[str], Allowlist] = None, *,
            environ=None) -> Allowlist:
    """The allowlist of a loading call: ``names`` plus :data:`ENV_VAR`.

    An :class:`Allowlist` is returned unchanged (already resolved, e.g. the driver's list on
    an executor): the environment adds nothing to it.
    """
    if isinstance(names, Allowlist):
        return names
    return Allowlist.of(names).union(_environment(environ))


_AMBIENT: contextvars.ContextVar[Optional[Allowlist]] = contextvars.ContextVar(
    "sparkml_aiaas_trusted_factories", default=None)


@contextlib.contextmanager
def loading(allowlist: Allowlist) -> Iterator[Allowlist]:
    """Within the block, readers called without ``trusted_factories`` (pyspark's
    ``PipelineModel`` reader calling a stage's ``load(path)``) use ``allowlist``."""
    token = _AMBIENT.set(trusted(allowlist))
    try:
        yield _AMBIENT.get()
    finally:
        _AMBIENT.reset(token)


def current(names: Union[None, str, Iterable[str], Allowlist] = None) -> Allowlist:
    """``trusted(names)``, or inside :func:`loading` with no ``names``, that block's list."""
    ambient = _AMBIENT.get()
    if names is None and ambient is not None:
        return ambient
    return trusted(names)


def check_artifact_class(class_path: Any, where: str) -> str:
    """``class_path`` if our artifact writer saves that class; else :class:`ModelFormatError`,
    before anything is imported."""
    if not isinstance(class_path, str) or class_path not in ARTIFACT_CLASSES:
        raise ModelFormatError(
            f"{where} names the class {_shown(class_path)}, which is not a sparkml_aiaas model "
            "class; only the package's own model classes are loaded, and nothing is imported "
            "for any other name")
    return class_path


def check_stage_class(class_path: Any, where: str) -> str:
    """A saved PipelineModel stage's class: ours, or pyspark.ml's own."""
    if isinstance(class_path, str) and (class_path in ARTIFACT_CLASSES
                                        or _PYSPARK_STAGE.fullmatch(class_path)):
        return class_path
    raise ModelFormatError(
        f"{where} names the stage class {_shown(class_path)}, which is neither a sparkml_aiaas "
        "model class nor a pyspark.ml stage; it is not imported")
