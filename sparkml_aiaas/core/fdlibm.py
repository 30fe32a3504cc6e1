"""fdlibm's ``exp``, vectorised with numpy: the exact bits Spark SQL's ``exp`` returns.

Spark evaluates ``exp`` with ``java.lang.StrictMath.exp``, which is fdlibm's
``e_exp.c`` (Sun, 1993) bit for bit.  glibc's and numpy's ``exp`` round
differently in about one case in ten, so a probability computed in the JVM
and one computed in Python would not always be the same double.  This port
makes them the same: every step below is one IEEE-754 double operation in
fdlibm's order (numpy does not fuse multiply-adds), so the result equals
``StrictMath.exp`` for every input (``tests/test_fdlibm.py`` checks it
against Spark).  No pyspark here.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["exp", "exp_scalar"]

_HALF = (0.5, -0.5)
_HUGE = 1.0e300
_TWOM1000 = 9.33263618503218878990e-302  # 2**-1000
_O_THRESHOLD = 7.09782712893383973096e02
_U_THRESHOLD = -7.45133219101941108420e02
_LN2_HI = (6.93147180369123816490e-01, -6.93147180369123816490e-01)
_LN2_LO = (1.90821492927058770002e-10, -1.90821492927058770002e-10)
_INV_LN2 = 1.44269504088896338700e00
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08


def _high_word(x: np.ndarray) -> np.ndarray:
    """The upper 32 bits of each double, sign bit cleared (fdlibm's ``hx & 0x7fffffff``)."""
    return (x.view(np.uint64) >> np.uint64(32)).astype(np.uint32) & np.uint32(0x7FFFFFFF)


def exp(values) -> np.ndarray:
    """``StrictMath.exp`` of each value (float64 array in, float64 array out)."""
    x = np.array(values, dtype=np.float64, copy=True, ndmin=1)
    shape = x.shape
    x = x.ravel()
    out = np.empty_like(x)
    hx = _high_word(x)
    negative = np.signbit(x)
    sign = negative.astype(np.int64)  # fdlibm's xsb

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        special = hx >= np.uint32(0x40862E42)  # |x| >= 709.78..., or not finite
        nan = np.isnan(x)
        out[special & nan] = x[special & nan] + x[special & nan]
        inf = np.isinf(x)
        out[special & inf & ~negative] = np.inf
        out[special & inf & negative] = 0.0
        finite_special = special & ~nan & ~inf
        over = finite_special & (x > _O_THRESHOLD)
        under = finite_special & (x < _U_THRESHOLD)
        out[over] = _HUGE * _HUGE
        out[under] = _TWOM1000 * _TWOM1000
        regular = ~(nan | inf | over | under)

        tiny = regular & (hx < np.uint32(0x3E300000))  # |x| < 2**-28
        out[tiny] = 1.0 + x[tiny]

        work = regular & ~tiny
        xr = x[work]
        hxr = hx[work]
        sr = sign[work]
        k = np.zeros(xr.shape, dtype=np.int64)
        hi = xr.copy()
        lo = np.zeros_like(xr)
        reduce = hxr > np.uint32(0x3FD62E42)  # |x| > 0.5 ln2
        near = reduce & (hxr < np.uint32(0x3FF0A2B2))  # and |x| < 1.5 ln2
        ln2_hi = np.where(sr == 1, _LN2_HI[1], _LN2_HI[0])
        ln2_lo = np.where(sr == 1, _LN2_LO[1], _LN2_LO[0])
        hi[near] = xr[near] - ln2_hi[near]
        lo[near] = ln2_lo[near]
        k[near] = 1 - sr[near] - sr[near]
        far = reduce & ~near
        half = np.where(sr[far] == 1, _HALF[1], _HALF[0])
        # C's (int) conversion truncates toward zero.
        k[far] = np.trunc(_INV_LN2 * xr[far] + half).astype(np.int64)
        t_far = k[far].astype(np.float64)
        hi[far] = xr[far] - t_far * _LN2_HI[0]
        lo[far] = t_far * _LN2_LO[0]
        xr = np.where(reduce, hi - lo, xr)

        t = xr * xr
        c = xr - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
        y = np.where(
            k == 0,
            1.0 - ((xr * c) / (c - 2.0) - xr),
            1.0 - ((lo - (xr * c) / (2.0 - c)) - hi),
        )
        # Adding k to the exponent is exact scaling by 2**k; below 2**-1021 fdlibm scales by
        # 2**(k+1000) and then rounds once multiplying by 2**-1000.
        small = k < -1021
        y = np.where(small, np.ldexp(y, k + 1000) * _TWOM1000, np.ldexp(y, k))
        out[work] = y
    return out.reshape(shape)


# fdlibm compares the high word of |x| with these constants; as doubles (low word 0) the same
# tests are plain float comparisons.
_HX_SPECIAL = float.fromhex("0x1.62e42p+9")   # hx >= 0x40862E42: |x| >= 709.78...
_HX_REDUCE = float.fromhex("0x1.62e43p-2")    # hx > 0x3FD62E42: |x| > 0.5 ln2
_HX_NEAR = float.fromhex("0x1.0a2b2p+0")      # hx < 0x3FF0A2B2: |x| < 1.5 ln2
_HX_TINY = 2.0 ** -28                         # hx < 0x3E300000


def exp_scalar(x: float) -> float:
    """``StrictMath.exp`` of one Python float: the same bits as :func:`exp`.

    :func:`exp` costs tens of microseconds whatever the array's size (its masks and
    temporaries); a served single record needs one or two exps.  Python floats are IEEE
    doubles and each operator below rounds once, in fdlibm's order, as in :func:`exp`
    (``tests/test_fdlibm.py`` compares the two).
    """
    if x != x:
        return x + x  # NaN
    magnitude = -x if x < 0.0 else x
    negative = x < 0.0 or (x == 0.0 and math.copysign(1.0, x) < 0.0)
    if magnitude >= _HX_SPECIAL:
        if magnitude == math.inf:
            return 0.0 if negative else x
        if x > _O_THRESHOLD:
            return _HUGE * _HUGE
        if x < _U_THRESHOLD:
            return _TWOM1000 * _TWOM1000
    if magnitude < _HX_TINY:
        return 1.0 + x
    sign = 1 if negative else 0
    k = 0
    hi = x
    lo = 0.0
    if magnitude >= _HX_REDUCE:
        if magnitude < _HX_NEAR:
            hi = x - _LN2_HI[sign]
            lo = _LN2_LO[sign]
            k = 1 - sign - sign
        else:
            k = int(_INV_LN2 * x + _HALF[sign])  # int() truncates toward zero, as C's (int)
            t_far = float(k)
            hi = x - t_far * _LN2_HI[0]
            lo = t_far * _LN2_LO[0]
        x = hi - lo
    t = x * x
    c = x - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
    if k == 0:
        return 1.0 - ((x * c) / (c - 2.0) - x)
    y = 1.0 - ((lo - (x * c) / (2.0 - c)) - hi)
    if k < -1021:
        return math.ldexp(y, k + 1000) * _TWOM1000
    return math.ldexp(y, k)
