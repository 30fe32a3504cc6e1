"""Estimator keywords and docs derived from the declared Params: each param is declared once.

pyspark.ml estimators traditionally write every Param three more times: in the keyword list
of a ``@keyword_only`` ``__init__``, again in ``setParams``, and in the docstring, and the
copies drift (a default changed in ``_setDefault`` but not in a signature, a new Param missing
from one list).  Like xgboost.spark, which reflects its params from XGBoost's, and pyspark,
which generates its shared params, :class:`KeywordParams` derives all of them from the class
itself when a subclass is created:

- ``__init__(self, *, ...)`` and ``setParams(self, *, ...)`` with pyspark's ``keyword_only``
  semantics: positional arguments are refused, ``self._input_kwargs`` holds exactly the
  keywords passed, only those are set (``None`` leaves a param unset), and an unknown keyword
  is a ``TypeError`` naming it, as Python's own, with a did-you-mean hint;
- ``__signature__`` of the class and of both methods, every Param with its default (from
  ``_setDefault``), so ``inspect.signature``, ``help()`` and IDEs list them;
- the docstring's ``Parameters`` section, from each Param's doc, type and default, placed into
  the hand-written narrative before its first other section (``Examples``...).  A class whose
  docstring lists parameters by hand is refused when it is defined.

The Params stay ordinary pyspark.ml Params: ``explainParams``, ``copy``, ``Pipeline``,
``CrossValidator`` and ``DefaultParamsWritable``/``Readable`` see no difference.  A subclass
that writes its own ``__init__`` or ``setParams`` keeps them and opts out.
"""

from __future__ import annotations

import difflib
import inspect
import re
import textwrap
from abc import ABCMeta
from typing import Any, Dict, List, Optional

from pyspark import keyword_only
from pyspark.ml.param import Param, Params, TypeConverters

__all__ = ["KeywordParams", "config_param_names", "declared_params", "parameters_section"]

#: typeConverter → (annotation, numpydoc type) of the Params' keywords.
_TYPES = {
    TypeConverters.toString: (str, "str"),
    TypeConverters.toInt: (int, "int"),
    TypeConverters.toFloat: (float, "float"),
    TypeConverters.toBoolean: (bool, "bool"),
    TypeConverters.toListString: (List[str], "list of str"),
    TypeConverters.toListInt: (List[int], "list of int"),
    TypeConverters.toListFloat: (List[float], "list of float"),
}

#: A numpydoc section header: a title line underlined with dashes.
_SECTION = re.compile(r"^([A-Z][A-Za-z ]*)\n-{3,}[ \t]*$", re.MULTILINE)

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def declared_params(cls) -> List[Param]:
    """The Params of ``cls`` as pyspark resolves them (the first class in the MRO naming an
    attribute wins), columns (``...Col``, ``...Cols``) first, otherwise in the order the
    mixins introduce them (a param redeclared with a new doc keeps its place)."""
    resolved, introduced = {}, {}
    for depth, klass in enumerate(cls.__mro__):
        for order, (name, value) in enumerate(vars(klass).items()):
            resolved.setdefault(name, value)
            if isinstance(value, Param):
                introduced[name] = (depth, order)  # the deepest declaration wins
    names = [name for name, value in resolved.items() if isinstance(value, Param)]
    names.sort(key=lambda name: (not name.endswith(("Col", "Cols")), introduced[name]))
    return [resolved[name] for name in names]


def config_param_names(estimator_class, skip=("featuresCol", "featuresCols", "labelCol")
                       ) -> Dict[str, str]:
    """``{snake_case: camelCase}`` of the Params a job config may set for ``estimator_class``
    (YAML keys are snake_case: ``maxDepth`` → ``max_depth``), without the ones in ``skip``."""
    return {re.sub(r"([A-Z])", r"_\1", param.name).lower(): param.name
            for param in declared_params(estimator_class) if param.name not in skip}


def _settable(instance: Params, where: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The keywords to set (``None`` values dropped); TypeError names an unknown one."""
    for name in kwargs:
        if not instance.hasParam(name):
            known = {p.name.lower(): p.name for p in instance.params}
            close = difflib.get_close_matches(name.lower(), list(known), n=1)
            hint = f"; did you mean {known[close[0]]!r}?" if close else ""
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")
    return {name: value for name, value in kwargs.items() if value is not None}


def _methods(cls):
    """``__init__`` and ``setParams`` for ``cls`` (their signatures are set by the caller)."""

    @keyword_only
    def __init__(self, **kwargs):
        super(cls, self).__init__()
        _settable(self, f"{type(self).__name__}.__init__", kwargs)
        self.setParams(**kwargs)

    @keyword_only
    def setParams(self, **kwargs):
        return self._set(**_settable(self, f"{type(self).__name__}.setParams", kwargs))

    __init__.__doc__ = (f"Every Param of :class:`{cls.__name__}` as a keyword (see the class "
                        "docstring); only the keywords given are set, None leaves a param unset.")
    setParams.__doc__ = ("Set the Params given as keywords and return self; the others keep "
                         "their values, None leaves a param as it is.")
    for method in (__init__, setParams):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        method.__module__ = cls.__module__
    return __init__, setParams


def _signature(params: List[Param], defaults: Dict[str, Any], with_self: bool):
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] \
        if with_self else []
    for param in params:
        annotation = _TYPES.get(param.typeConverter, (inspect.Parameter.empty,))[0]
        if param.name not in defaults:
            if annotation is not inspect.Parameter.empty:
                annotation = Optional[annotation]
        elif annotation is inspect.Parameter.empty:  # a custom converter: the default's type
            annotation = type(defaults[param.name])
        parameters.append(inspect.Parameter(param.name, _KEYWORD, annotation=annotation,
                                            default=defaults.get(param.name)))
    return inspect.Signature(parameters)


def parameters_section(params: List[Param], defaults: Dict[str, Any]) -> str:
    """The numpydoc ``Parameters`` section of ``params``: type, default and doc of each."""
    lines = ["Parameters", "----------"]
    for param in params:
        kind = _TYPES.get(param.typeConverter, (None, None))[1]
        if param.name in defaults:
            value = defaults[param.name]
            kind = kind or type(value).__name__
            lines.append(f"{param.name} : {kind}, default {value!r}")
        else:
            lines.append(f"{param.name} : {kind or 'object'}, optional")
        lines.extend(textwrap.wrap(param.doc, 84, initial_indent="    ",
                                   subsequent_indent="    ", break_on_hyphens=False))
    return "\n".join(lines)


def _documented(cls, section: str) -> str:
    """The class's own narrative docstring with ``section`` before its first other section."""
    narrative = inspect.cleandoc(vars(cls).get("__doc__") or "")
    match = _SECTION.search(narrative)
    if "Parameters" in _SECTION.findall(narrative):
        raise TypeError(f"{cls.__qualname__}'s docstring lists its parameters by hand: they are "
                        "generated from the Params' docs (document a param in its Param)")
    if match is None:
        return f"{narrative}\n\n{section}\n" if narrative else f"{section}\n"
    head, tail = narrative[:match.start()].rstrip(), narrative[match.start():]
    return f"{head}\n\n{section}\n\n{tail}\n" if head else f"{section}\n\n{tail}\n"


class _DerivedKeywords(ABCMeta):
    """pyspark's ABCMeta plus the derivation, once each class is complete: the defaults come
    from a template instance, which ABCMeta allows only after its ``__new__`` returned (so
    not from ``__init_subclass__``)."""

    def __init__(cls, name, bases, namespace, **kwargs):
        super().__init__(name, bases, namespace, **kwargs)
        if "__init__" in namespace or "setParams" in namespace:
            cls.__signature__ = None  # hand-written: inspect reads its own __init__
            return
        params = declared_params(cls)
        if not params:  # a family's shared base: its concrete estimators get the keywords
            return
        init, set_params = _methods(cls)
        cls.__init__, cls.setParams = init, set_params
        defaults = {param.name: value for param, value in cls()._defaultParamMap.items()}
        cls.__signature__ = _signature(params, defaults, with_self=False)
        init.__signature__ = set_params.__signature__ = _signature(params, defaults, True)
        cls.__doc__ = _documented(cls, parameters_section(params, defaults))


class KeywordParams(Params, metaclass=_DerivedKeywords):
    """Base of the estimators whose ``__init__``, ``setParams``, signatures and docstring
    Parameters section are derived from their declared Params (see the module docstring).

    The family's shared estimator base (which declares no Params) derives from it; every
    concrete estimator below it gets the keywords of exactly its own Params.
    """
