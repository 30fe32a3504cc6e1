"""Exact save/restore of driver-side solver states as plain ndarrays.

A training job that is killed must resume and end with bit-identical
coefficients, so a solver's state is everything its next iteration reads and
must survive a round trip through ``np.savez``/``np.load`` unchanged, bit for
bit.  :class:`ArrayState` gives a dataclass that property: floats become 0-d
``float64`` arrays, ints 0-d ``int64`` arrays, arrays are stored as
``float64`` with their shape (including empty ones such as a ``(0, n)``
memory), and nothing needs pickling (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Dict, Mapping

import numpy as np


class ArrayState:
    """Mixin for ``@dataclass(eq=False)`` solver states.

    Subclasses name their scalar fields in ``_FLOATS`` and ``_INTS``; every
    other field is a ``float64`` ndarray.  ``_NDIM`` maps array fields to
    their required number of dimensions (checked on restore, so a mangled
    checkpoint fails loudly instead of resuming wrongly).

    Equality (``==``) is bit-for-bit on every field, which is what "resumes
    exactly" means; ``NaN`` equals itself and ``-0.0`` differs from ``0.0``.
    """

    _FLOATS: tuple = ()
    _INTS: tuple = ()
    _NDIM: dict = {}

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """All fields as ndarrays, ready for ``np.savez(file, **state.to_arrays())``.

        Returns
        -------
        dict of str to ndarray
            Fresh copies: later changes to the state do not alter them.
        """
        out: Dict[str, np.ndarray] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in self._FLOATS:
                out[field.name] = np.array(value, dtype=np.float64)
            elif field.name in self._INTS:
                out[field.name] = np.array(value, dtype=np.int64)
            else:
                out[field.name] = np.array(value, dtype=np.float64, copy=True)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]):
        """Rebuild a state from :meth:`to_arrays` output (or an ``np.load`` of it).

        Parameters
        ----------
        arrays : mapping of str to ndarray
            A dict or an ``NpzFile``; keys other than the state's fields are
            ignored, so a checkpoint may carry more.

        Raises
        ------
        ValueError
            When a field is missing or has the wrong shape or dtype kind.
        """
        kwargs = {}
        for field in fields(cls):
            name = field.name
            if name not in arrays:
                raise ValueError(f"{cls.__name__} checkpoint has no {name!r} array")
            value = np.asarray(arrays[name])
            if name in cls._FLOATS or name in cls._INTS:
                if value.ndim != 0:
                    raise ValueError(f"{cls.__name__}.{name} must be a 0-d array, "
                                     f"got shape {value.shape}")
                if name in cls._INTS:
                    if value.dtype.kind not in "iu":
                        raise ValueError(f"{cls.__name__}.{name} must be an integer array, "
                                         f"got dtype {value.dtype}")
                    kwargs[name] = int(value)
                else:
                    # float() of a float64 is exact: no bits are lost.
                    kwargs[name] = float(value)
            else:
                if value.dtype != np.float64:
                    raise ValueError(f"{cls.__name__}.{name} must be float64, got {value.dtype}")
                ndim = cls._NDIM.get(name)
                if ndim is not None and value.ndim != ndim:
                    raise ValueError(f"{cls.__name__}.{name} must have {ndim} dimensions, "
                                     f"got shape {value.shape}")
                # A private, contiguous copy: an NpzFile's buffers are not ours to keep.
                kwargs[name] = np.array(value, dtype=np.float64, copy=True, order="C")
        state = cls(**kwargs)
        state._check_shapes()
        return state

    def _check_shapes(self) -> None:
        """Subclass hook: raise ``ValueError`` if the fields do not fit together."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        mine, theirs = self.to_arrays(), other.to_arrays()
        return all(
            a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
            for a, b in ((mine[k], theirs[k]) for k in mine)
        )

    __hash__ = None  # mutable arrays inside: not hashable
