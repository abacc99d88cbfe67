"""PRANC parameterisation of a BinaryNet: every conv/linear weight is `scale_l * V_l @ alpha_l`.

The weights of layer l are never parameters: they are rebuilt at every forward pass from the
layer's coefficients alpha_l and its basis V_l (host.pranc_torch), which is drawn from the
portable hash, so the edge rebuilds exactly the same weights from the seed and the alphas.
BatchNorm parameters and the biases of the first and last layers stay ordinary parameters: they
travel as they are in the stream's fixed part.

Binary layers use sign(theta) with no XNOR scale (the next BatchNorm absorbs any positive scale,
and without it their thresholds do not depend on alpha, so one set serves every prefix). The
first layer's int8 weights and the last layer's int16 weights are quantised from theta per
channel / per layer exactly as the edge does it (edge.engine.stream).

Prefixes: the alphas of every layer are cut into `chunks` equal runs (protocol.pranc.chunk_bounds);
a stream prefix of c chunks is the model with the first c runs of every layer and zeros after.
`keep` in forward() selects such a prefix, which is how training makes prefixes good.
"""

import math

import torch
import torch.nn as nn

from host.layers import ste_sign
from host.models import BinaryNet
from host.pranc_torch import make_basis
from protocol.errors import BinsortError
from protocol.pranc import chunk_end

SPLITS = ("size", "sqrt")


def _as_is(w: torch.Tensor) -> torch.Tensor:
    return w


class _NearZeroSign(torch.autograd.Function):
    """sign(theta); the gradient passes with weight max(0, 1 - |theta| / (c * std(theta))) / c,
    so it is spent on the weights an alpha step can actually flip."""

    @staticmethod
    def forward(ctx, theta, c):
        ctx.save_for_backward(theta)
        ctx.width = float(theta.detach().std().clamp(min=1e-12)) * c
        ctx.c = c
        return torch.where(theta >= 0, 1.0, -1.0).to(theta.dtype)

    @staticmethod
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        return grad * (1 - theta.abs() / ctx.width).clamp(min=0) / ctx.c, None


def binary_from_theta(theta: torch.Tensor, mix: float = 1.0, window=None) -> torch.Tensor:
    """sign(theta). The gradient goes straight through (window None), or, with `window` c,
    only to weights within c standard deviations of zero (_NearZeroSign). While `mix` < 1
    (early training) the forward blends in clamp(theta / std, -1, 1): the weights binarise
    gradually, like the activations, so the alphas first learn a real-valued net in their
    subspace."""
    w = ste_sign(theta, math.inf) if window is None else _NearZeroSign.apply(theta, window)
    if mix >= 1.0:
        return w
    soft = (theta / theta.detach().std().clamp(min=1e-12)).clamp(-1.0, 1.0)
    return mix * w + (1.0 - mix) * soft


def weight_slots(net: BinaryNet) -> list:
    """(module, attribute, kind) for every weight PRANC rebuilds, in execution order."""
    slots = [(net.stem.conv, "weight", "stem")]
    slots += [(m, "weight", "binary") for m in net.convs]
    slots += [(m, "weight", "binary") for m in net.dense]
    slots.append((net.head.linear, "weight", "head"))
    return slots


def split_budget(sizes: list, total: int, split) -> list:
    """Alphas per layer: `split` is "size" (in proportion to each layer's weight count), "sqrt"
    (to its square root, which gives small layers more) or an explicit list. Every layer gets
    at least one alpha and never more than it has weights; the total is exactly `total` unless
    that is more than all layers can take."""
    if isinstance(split, (list, tuple)):
        if len(split) != len(sizes) or any(int(k) < 1 for k in split):
            raise BinsortError("--alpha-split needs %d positive counts" % len(sizes))
        return [min(int(k), d) for k, d in zip(split, sizes, strict=True)]
    if split not in SPLITS:
        raise BinsortError("unknown alpha split %r (choose from %s)" % (split, ", ".join(SPLITS)))
    total = min(total, sum(sizes))
    weights = [d if split == "size" else math.sqrt(d) for d in sizes]
    ks = [1] * len(sizes)
    # hand out the rest in proportion, capped at each layer's size, largest remainders first
    while sum(ks) < total:
        free = [i for i, d in enumerate(sizes) if ks[i] < d]
        room = total - sum(ks)
        wsum = sum(weights[i] for i in free)
        shares = {i: min(sizes[i] - ks[i], room * weights[i] / wsum) for i in free}
        added = 0
        for i in free:
            take = int(shares[i])
            ks[i] += take
            added += take
        if added == 0:
            for i in sorted(free, key=lambda i: shares[i] - int(shares[i]), reverse=True):
                if sum(ks) < total and ks[i] < sizes[i]:
                    ks[i] += 1
    return ks


class PrancNet(nn.Module):
    """A BinaryNet whose conv/linear weights are rebuilt from per-layer alphas."""

    def __init__(
        self,
        arch,
        classes,
        alphas,
        basis="fastfood",
        seed=0,
        split="size",
        chunks=16,
        estimator="approx",
        window=1.0,
        alpha_init=1.0,
        ste_window=None,
    ):
        super().__init__()
        self.net = BinaryNet(arch, classes, estimator, window)
        self.arch, self.classes, self.basis_kind = arch, classes, basis
        self.seed, self.chunks = seed, chunks
        self.slots = weight_slots(self.net)
        self.shapes, init_std = [], []
        for module, attr, _ in self.slots:
            w = getattr(module, attr)
            self.shapes.append(tuple(w.shape))
            init_std.append(1.0 / math.sqrt(w[0].numel()))  # the spread of a kaiming init
            del module._parameters[attr]
            setattr(module, attr, None)
        for m, _, kind in self.slots:
            if kind == "binary":
                m.weight_fn = _as_is  # set_weights() binarises
        self.mix = 1.0  # gradual binarisation of the weights, driven by the trainer
        self.ste_window = ste_window  # binary_from_theta's window (training only)
        sizes = [math.prod(s) for s in self.shapes]
        self.ks = split_budget(sizes, alphas, split)
        self.alphas = nn.ParameterList(nn.Parameter(torch.randn(k)) for k in self.ks)
        self._bases = None
        with torch.no_grad():  # initial weights spread like a kaiming init, times alpha_init
            for i, (a, b) in enumerate(zip(self.alphas, self.bases(), strict=True)):
                theta = b(a) / b.norm
                a.mul_(alpha_init * init_std[i] / theta.std().clamp(min=1e-12))
        self.quantize = False  # int16 alphas in the loop (the end of training)
        self._bases = None

    def bases(self) -> list:
        if self._bases is None:
            dev = self.alphas[0].device
            self._bases = [
                make_basis(self.basis_kind, self.seed, i, math.prod(s), k, dev)
                for i, (s, k) in enumerate(zip(self.shapes, self.ks, strict=True))
            ]
        return self._bases

    def _apply(self, fn, *args, **kwargs):  # bases follow the module to its device
        self._bases = None
        return super()._apply(fn, *args, **kwargs)

    def alpha_step(self, i: int) -> torch.Tensor:
        """The int16 quantisation step of layer i's alphas: max|alpha| / 32767."""
        return self.alphas[i].detach().abs().amax().clamp(min=1e-12) / 32767

    def coefficients(self, i: int, keep=None) -> torch.Tensor:
        a = self.alphas[i]
        if self.quantize:
            step = self.alpha_step(i)
            a = a + (torch.round(a / step) * step - a).detach()
        if keep is not None and keep < self.chunks:
            a = a[: chunk_end(self.ks[i], self.chunks, keep)]
        return a

    def set_weights(self, keep=None) -> None:
        for i, ((module, attr, _), basis) in enumerate(zip(self.slots, self.bases(), strict=True)):
            theta = basis(self.coefficients(i, keep)) / basis.norm
            if self.slots[i][2] == "binary":
                theta = binary_from_theta(
                    theta, self.mix if self.training else 1.0, self.ste_window
                )
            setattr(module, attr, theta.view(self.shapes[i]))

    def forward(self, x, keep=None):
        self.set_weights(keep)
        return self.net(x)

    def int_alphas(self) -> list:
        """The int16 alphas as the stream sends them (list of int64 tensors)."""
        return [
            torch.round(self.alphas[i].detach() / self.alpha_step(i)).clamp(-32767, 32767).long()
            for i in range(len(self.ks))
        ]

    def layer_scales(self) -> list:
        """theta_real = scale * (V @ int_alpha) per layer: the alpha step / the basis norm."""
        return [float(self.alpha_step(i)) / b.norm for i, b in enumerate(self.bases())]

    @torch.no_grad()
    def exact_thetas(self, keep=None) -> list:
        """V @ int_alpha in int64 per layer (the edge computes the same with numpy)."""
        out = []
        for i, (a, b) in enumerate(zip(self.int_alphas(), self.bases(), strict=True)):
            if keep is not None and keep < self.chunks:
                a = a[: chunk_end(self.ks[i], self.chunks, keep)]
            out.append(b(a).view(self.shapes[i]))
        return out
