"""The PRANC hash and bases in torch, for training on CPU or CUDA and for exact packing.

torch has no unsigned 32-bit multiply on every device, so the hash runs in int64 with each
32 x 32-bit product split into 16-bit halves: every intermediate stays below 2^49, exact on CPU
and CUDA alike. The same values as protocol.prng and edge.engine.basis (checked by the tests against
the vectors in docs/format.md).

The fastfood basis is differentiable in float (training) and exact in int64 (packing) with the
same code. The dense basis regenerates its signs in chunks in forward and again in backward, so
it never holds the k x d basis.
"""

import torch

from edge.engine.basis import block_size
from protocol.prng import MUL1, MUL2, SEED_SALT

_MASK = 0xFFFFFFFF


def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    lo = x & 0xFFFF
    hi = x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _MASK


def mix32(x: torch.Tensor) -> torch.Tensor:
    """protocol.prng.mix32 on an int64 tensor of 32-bit values."""
    x = x & _MASK
    x = x ^ (x >> 16)
    x = _mulmod32(x, MUL1)
    x = x ^ (x >> 15)
    x = _mulmod32(x, MUL2)
    return x ^ (x >> 16)


def stream_keys(seed: int, layer: int, streams: torch.Tensor) -> torch.Tensor:
    dev = streams.device
    base = mix32(mix32(torch.tensor((seed ^ SEED_SALT) & _MASK, device=dev)) ^ layer)
    return mix32(base ^ streams.to(torch.int64))


def hash32(seed: int, layer: int, streams: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """hash32 over the outer product of streams (rows) and indices (columns), int64."""
    keys = stream_keys(seed, layer, streams.reshape(-1))
    return mix32(keys[:, None] ^ indices.to(torch.int64)[None, :])


def signs(seed, layer, streams, count, dtype=torch.float32):
    """(len(streams), count) of +1/-1 as edge.engine.basis.signs."""
    dev = streams.device
    words = hash32(seed, layer, streams, torch.arange((count + 31) // 32, device=dev))
    bit = torch.arange(32, device=dev)
    bits = ((words[:, :, None] >> bit) & 1).reshape(words.shape[0], -1)[:, :count]
    return (1 - 2 * bits).to(dtype)


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform along the last axis (edge.engine.basis.fwht)."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        y = x.reshape(*lead, n // (2 * h), 2, h)
        x = torch.cat((y[..., 0, :] + y[..., 1, :], y[..., 0, :] - y[..., 1, :]), dim=-1)
        x = x.reshape(*lead, n)
        h *= 2
    return x


class Fastfood:
    """The fastfood basis of one layer: its sign diagonals and permutations, O(d) memory."""

    def __init__(self, seed, layer, d, k, device="cpu"):
        self.d, self.k, self.n = d, k, block_size(k)
        n = self.n
        blocks = torch.arange(-(-d // n), device=device, dtype=torch.int64)
        self.d1 = signs(seed, layer, 4 * blocks, n, torch.int64)
        keys = hash32(seed, layer, 4 * blocks + 1, torch.arange(n, device=device))
        self.perm = torch.argsort(keys, dim=1, stable=True)
        self.d2 = signs(seed, layer, 4 * blocks + 2, n, torch.int64)
        self.d3 = signs(seed, layer, 4 * blocks + 3, n, torch.int64)
        self._float = {}

    def _parts(self, dtype):
        if dtype == torch.int64:
            return self.d1, self.d2, self.d3
        if dtype not in self._float:
            self._float[dtype] = tuple(p.to(dtype) for p in (self.d1, self.d2, self.d3))
        return self._float[dtype]

    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        """V @ alpha (length d) in alpha's dtype; alpha may be a prefix of the k coefficients."""
        d1, d2, d3 = self._parts(alpha.dtype)
        a = torch.nn.functional.pad(alpha, (0, self.n - alpha.shape[0]))
        v = fwht(d1 * a[None, :])
        v = torch.gather(v, 1, self.perm)
        v = d3 * fwht(d2 * v)
        return v.reshape(-1)[: self.d]

    @property
    def norm(self) -> float:
        """|V alpha| / |alpha| within one block (two unnormalised transforms of size n)."""
        return float(self.n)


def _dense_matvec(alpha, seed, layer, d, chunk):
    out = torch.zeros(d, dtype=alpha.dtype, device=alpha.device)
    for s in range(0, alpha.shape[0], chunk):
        part = alpha[s : s + chunk]
        ids = torch.arange(s, s + part.shape[0], device=alpha.device)
        out += part @ signs(seed, layer, ids, d, alpha.dtype)
    return out


class _DenseApply(torch.autograd.Function):
    """V @ alpha, with the transpose for the gradient; both regenerate the signs chunk by chunk."""

    @staticmethod
    def forward(ctx, alpha, seed, layer, d, chunk):
        ctx.meta = (alpha.shape[0], seed, layer, d, chunk)
        return _dense_matvec(alpha, seed, layer, d, chunk)

    @staticmethod
    def backward(ctx, grad):
        k, seed, layer, d, chunk = ctx.meta
        parts = []
        for s in range(0, k, chunk):
            ids = torch.arange(s, min(k, s + chunk), device=grad.device)
            parts.append(signs(seed, layer, ids, d, grad.dtype) @ grad)
        return torch.cat(parts), None, None, None, None


class Dense:
    """The dense Rademacher basis of one layer, regenerated from the hash at every use."""

    def __init__(self, seed, layer, d, k, device="cpu", chunk=64):
        self.seed, self.layer, self.d, self.k, self.chunk = seed, layer, d, k, chunk

    def __call__(self, alpha: torch.Tensor) -> torch.Tensor:
        meta = (self.seed, self.layer, self.d, self.chunk)
        if alpha.dtype == torch.int64:  # exact packing path, no autograd
            return _dense_matvec(alpha, *meta)
        return _DenseApply.apply(alpha, *meta)

    @property
    def norm(self) -> float:
        return float(self.k) ** 0.5


def make_basis(kind: str, seed: int, layer: int, d: int, k: int, device="cpu"):
    if kind == "fastfood":
        return Fastfood(seed, layer, d, k, device)
    if kind == "dense":
        return Dense(seed, layer, d, k, device)
    raise ValueError("unknown basis %r" % kind)
