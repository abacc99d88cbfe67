"""Folding an affine producer, BatchNorm and sign into one integer threshold per channel.

A layer produces an integer accumulator `acc` per output channel; the deployed value is
`y = a * acc + b` with `a > 0` (a binary layer: a = alpha, b = 0; the 8-bit input layer: a = weight
scale / 255, b = bias). The next block computes `sign(g * (y - mean) + beta)` with
`g = gamma / sqrt(var + eps)` and `sign(0) = +1`. That is a comparison of `acc` with
`tau = (mean - beta / g - b) / a`:

    g > 0:  +1  iff  acc >= ceil(tau)          stored as T = ceil(tau),      flip = 0
    g < 0:  +1  iff  acc <= floor(tau)         stored as T = floor(tau) + 1, flip = 1
    g = 0:  constant sign(beta)                stored as T = INT32_MIN (+1) or INT32_MAX (-1)

and every engine computes the output bit (1 means -1) as `(acc < T) XOR flip`
(docs/format.md, section "Thresholds"). Pure Python floats, so host and edge fold identically.
"""

import math

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def _clamp(t: int) -> int:
    return max(INT32_MIN, min(INT32_MAX, t))


def fold_threshold(
    a: float, b: float, gamma: float, beta: float, mean: float, var: float, eps: float
) -> "tuple[int, int]":
    """(T, flip) such that sign(BN(a * acc + b)) == -1 exactly when (acc < T) XOR flip."""
    g = gamma / math.sqrt(var + eps)
    if g == 0 or a == 0:
        value = beta if g == 0 else g * (b - mean) + beta
        return (INT32_MIN, 0) if value >= 0 else (INT32_MAX, 0)
    tau = (mean - beta / g - b) / a
    if not math.isfinite(tau):
        return (INT32_MIN, 0) if (tau < 0) == (g > 0) else (INT32_MAX, 0)
    if g > 0:
        return _clamp(math.ceil(tau)), 0
    return _clamp(math.floor(tau) + 1), 1


def fold_thresholds(a, b, gamma, beta, mean, var, eps) -> "tuple[list, list]":
    """Per-channel fold over equal-length sequences; returns (thresholds, flips)."""
    ts, flips = [], []
    for i in range(len(gamma)):
        t, f = fold_threshold(
            float(a[i]),
            float(b[i]),
            float(gamma[i]),
            float(beta[i]),
            float(mean[i]),
            float(var[i]),
            float(eps),
        )
        ts.append(t)
        flips.append(f)
    return ts, flips
