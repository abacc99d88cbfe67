"""PRANC bases in numpy: the vectorised hash and exact integer reconstruction of a layer.

A layer with d weights and k coefficients has integer weights `theta = V @ alpha` for int16
alpha. Two bases (docs/format.md, "PRANC bases"):

- dense: column j of V is d Rademacher signs, bits of hash32(seed, layer, j, word);
  O(k * d) per reconstruction (the PRANC paper's method, kept as the reference);
- fastfood: with n = the power of two >= k, V is a stack of ceil(d / n) blocks
  `D3 H D2 P H D1` of n x n (random sign diagonals, a random permutation, Walsh-Hadamard
  transforms), every part drawn from the hash; O(d log k) per reconstruction.

Everything is int64 and exact, so the host (torch) and every edge produce the same weights and
the same signs. Values stay below n * k * 32767, far inside int64.
"""

import numpy as np

from protocol.prng import MUL1, MUL2, SEED_SALT

FASTFOOD = "fastfood"
DENSE = "dense"
BASES = (FASTFOOD, DENSE)

_M1 = np.uint32(MUL1)
_M2 = np.uint32(MUL2)


def mix32(x: np.ndarray) -> np.ndarray:
    """protocol.prng.mix32 on a uint32 array (multiplication wraps modulo 2^32)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.uint32))  # arrays wrap silently, scalars warn
    x = x ^ (x >> np.uint32(16))
    x = x * _M1
    x = x ^ (x >> np.uint32(15))
    x = x * _M2
    return x ^ (x >> np.uint32(16))


def stream_keys(seed: int, layer: int, streams) -> np.ndarray:
    """protocol.prng.stream_key for an array of streams (uint32)."""
    base = mix32(mix32((seed ^ SEED_SALT) & 0xFFFFFFFF) ^ np.uint32(layer))
    return mix32(base ^ np.asarray(streams, dtype=np.uint32))


def hash32(seed: int, layer: int, streams, indices) -> np.ndarray:
    """hash32 over the outer product of streams (rows) and indices (columns)."""
    keys = stream_keys(seed, layer, np.atleast_1d(streams))
    return mix32(keys[:, None] ^ np.asarray(indices, dtype=np.uint32)[None, :])


def signs(seed: int, layer: int, streams, count: int) -> np.ndarray:
    """(len(streams), count) int64 of +1/-1: bit i of the stream (LSB first in word i // 32),
    1 meaning -1, as protocol.prng.sign_bits."""
    words = hash32(seed, layer, streams, np.arange((count + 31) // 32))
    bits = np.unpackbits(words.astype("<u4").view(np.uint8), axis=1, bitorder="little")
    return 1 - 2 * bits[:, :count].astype(np.int64)


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalised Walsh-Hadamard transform along the last axis (length a power of two),
    Sylvester order: H[i, j] = (-1)^popcount(i & j)."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        x = np.concatenate((y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]), axis=-1)
        x = x.reshape(*lead, n)
        h *= 2
    return x


def block_size(k: int) -> int:
    """n: the smallest power of two >= k (the fastfood block)."""
    n = 1
    while n < k:
        n *= 2
    return n


def fastfood_parts(seed: int, layer: int, blocks, n: int):
    """(D1, perm, D2, D3) for the given block numbers: sign arrays (B, n) and permutations."""
    blocks = np.asarray(blocks, dtype=np.int64)
    d1 = signs(seed, layer, 4 * blocks, n)
    keys = hash32(seed, layer, 4 * blocks + 1, np.arange(n))
    perm = np.argsort(keys, axis=1, kind="stable")
    d2 = signs(seed, layer, 4 * blocks + 2, n)
    d3 = signs(seed, layer, 4 * blocks + 3, n)
    return d1, perm, d2, d3


def fastfood(seed: int, layer: int, alpha, d: int, k: int, max_block_rows: int = 64):
    """theta (int64, length d) = V alpha for the fastfood basis; alpha may be shorter than k
    (a prefix: the rest is zero). Works through `max_block_rows` blocks at a time so the
    working memory stays a few times d at most."""
    n = block_size(k)
    a = np.zeros(n, dtype=np.int64)
    alpha = np.asarray(alpha, dtype=np.int64)
    a[: len(alpha)] = alpha
    blocks = -(-d // n)
    out = np.empty(blocks * n, dtype=np.int64)
    rows = max(1, max_block_rows)
    for start in range(0, blocks, rows):
        ids = np.arange(start, min(blocks, start + rows))
        d1, perm, d2, d3 = fastfood_parts(seed, layer, ids, n)
        v = fwht(d1 * a[None, :])
        v = np.take_along_axis(v, perm, axis=1)
        v = d3 * fwht(d2 * v)
        out[start * n : (start + len(ids)) * n] = v.reshape(-1)
    return out[:d]


def dense(seed: int, layer: int, alpha, d: int, chunk: int = 32):
    """theta (int64, length d) = sum_j alpha_j s_j for the dense Rademacher basis."""
    alpha = np.asarray(alpha, dtype=np.int64)
    out = np.zeros(d, dtype=np.int64)
    for start in range(0, len(alpha), chunk):
        part = alpha[start : start + chunk]
        s = signs(seed, layer, np.arange(start, start + len(part)), d)
        out += part @ s
    return out


def reconstruct(basis: str, seed: int, layer: int, alpha, d: int, k: int) -> np.ndarray:
    if basis == FASTFOOD:
        return fastfood(seed, layer, alpha, d, k)
    if basis == DENSE:
        return dense(seed, layer, alpha, d)
    raise ValueError("unknown basis %r" % basis)
