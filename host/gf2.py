"""A seeded GF(2) code for binary weights (issue 20; a study, not yet a shipping format).

The n weight bits of a binary layer come from k = ceil(rate * n) trained coefficient bits:
weight i is the XOR of `taps` distinct coefficient bits, chosen by the portable hash (the one
every engine has, protocol.prng, here through host.pranc_torch), so a device could rebuild the
weights from the seed and the k bits. In the +-1 form training uses, an XOR is a product:
w_i = prod_j sign(z_{t_ij}), and the latent z are trained through the sign's estimator.
`tools/gf2-study` trains a BinaryNet so; docs/training-notes.md section 7 has what it reached.
"""

import math

import torch
import torch.nn as nn

from host.layers import ESTIMATORS
from host.pranc_torch import hash32


def code_taps(seed: int, layer: int, n: int, k: int, taps: int, blocks: int = 1) -> torch.Tensor:
    """(n, taps) int64: for each weight, `taps` distinct coefficient indices in [0, k), drawn
    without replacement from the hash: the j-th is hash mod (k - j), moved past the earlier
    ones (so it is uniform over the indices not yet taken). With `blocks` B, the weights and
    the coefficients are cut into B equal runs (n and k multiples of B) and each weight's taps
    stay in its own run: an output channel's weights (B = output channels) or one 3x3
    kernel's (B = n / 9) are coded by coefficients of their own."""
    kb, nb = k // blocks, n // blocks
    if kb * blocks != k or nb * blocks != n:
        raise ValueError("n and k must be multiples of the blocks")
    if not 1 <= taps <= kb:
        raise ValueError("taps must be between 1 and the number of coefficients of a block")
    h = hash32(seed, layer, torch.arange(n), torch.arange(taps))
    out = torch.empty((n, taps), dtype=torch.int64)
    for j in range(taps):
        t = h[:, j] % (kb - j)
        for e in torch.sort(out[:, :j], dim=1).values.unbind(1):
            t = t + (t >= e).to(torch.int64)
        out[:, j] = t
    return out + (torch.arange(n) // nb * kb)[:, None]


def decode_bits(bits: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The weight bits (0/1, int64) that coefficient bits `bits` (k,) make: XOR along taps."""
    picked = bits.to(torch.int64)[taps]
    out = picked[:, 0].clone()
    for j in range(1, picked.shape[1]):
        out ^= picked[:, j]
    return out


class Gf2Weight:
    """A binary layer's weight_fn: latent coefficients (k,) -> +-1 weights of `shape`.

    `estimator` "ste" or "approx" binarises each coefficient with that estimator and multiplies
    the signs; "tanh" (FleXOR's smooth XOR) computes the exact signs forward and takes the
    gradient of the product of tanh(z / window) instead, so each factor's gradient is weighted
    by how sure the other taps are."""

    def __init__(self, taps: torch.Tensor, shape: tuple, estimator: str, window: float):
        self.taps, self.shape = taps, shape
        self.estimator, self.window = estimator, window
        self.sign = ESTIMATORS.get(estimator)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        taps = self.taps.to(z.device)
        if self.estimator == "tanh":
            hard = (z >= 0).to(z.dtype).mul(2).sub(1)[taps].prod(1)
            soft = torch.tanh(z / self.window)[taps].prod(1)
            return (hard + (soft - soft.detach())).view(self.shape)
        s = self.sign(z, self.window)
        return s[taps].prod(1).view(self.shape)


def fit_code(target: torch.Tensor, taps: torch.Tensor, k: int, rounds: int = 60) -> torch.Tensor:
    """Coefficient signs (k,) whose decoded weights agree with the signs of `target` (n,) on
    as much of its magnitude as a greedy search finds: each round computes, for every
    coefficient, what flipping it would gain (its weights' |target|-weighted vote, the other
    taps held) and flips a random fifth of those that would gain (flipping all at once would
    undo each other's work). One tap: the weighted majority of the weights sharing each
    coefficient, found in the first rounds."""
    target = target.detach().flatten().to(torch.float64)
    gen = torch.Generator().manual_seed(0)
    z = torch.ones(k, dtype=torch.float64)
    for _ in range(rounds):
        signs = z[taps]  # (n, taps)
        whole = signs.prod(1)
        vote = torch.zeros(k, dtype=torch.float64)
        for j in range(taps.shape[1]):
            vote.index_add_(0, taps[:, j], target * whole * signs[:, j])  # the others' product
        better = -z * vote > 0  # flipping z_t changes the agreement by -2 * z_t * vote_t
        if not better.any():
            break  # a local optimum
        z = torch.where(better & (torch.rand(k, generator=gen, dtype=torch.float64) < 0.2), -z, z)
    return z


def apply_code(
    net,
    rate: float,
    taps: int = 2,
    seed: int = 0,
    estimator="ste",
    window_std=None,
    local=None,
    fit=False,
):
    """Replace every binary layer's weight by k = ceil(rate * n) latent coefficients and its
    weight_fn by the GF(2) decoder. The latents start random with the spread of the weights'
    init; `window_std` (a number of those spreads) sets the estimator's window, which is
    otherwise 1 (wider than any latent: the gradient always passes). `local` "channel" or
    "kernel" keeps each weight's taps within its output channel or its 3x3 kernel (dense
    layers: its output unit), each with ceil(rate * its weights) coefficients. `fit` starts
    the coefficients from the net's own weights (fit_code; a trained net given to --init)
    instead of from random. Returns [(n, k)]."""
    sizes = []
    for index, layer in enumerate(list(net.convs) + list(net.dense)):
        w = layer.weight
        n = w.numel()
        blocks = 1
        if local == "channel" or (local == "kernel" and w.dim() == 2):
            blocks = w.shape[0]
        elif local == "kernel":
            blocks = w.shape[0] * w.shape[1]
        k = blocks * max(taps, math.ceil(rate * n / blocks))
        spread = float(w.detach().std())
        chosen = code_taps(seed, index, n, k, taps, blocks)
        start = torch.randn(k)
        if fit:  # the fitted signs, with random magnitudes (some are easy to flip)
            start = fit_code(w.cpu(), chosen, k) * start.abs()
        del layer._parameters["weight"]
        layer.weight = nn.Parameter((start * spread).to(w.device, w.dtype))
        window = window_std * spread if window_std else 1.0
        layer.weight_fn = Gf2Weight(chosen, tuple(w.shape), estimator, window)
        sizes.append((n, k))
    return sizes
