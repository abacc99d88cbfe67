"""Quantizers and the layers that wire them to standard torch layers.

Each quantizer states its forward function and the gradient it pretends to have.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def binarize(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) = +1 (torch.sign gives 0 for 0 and is never used for binarising).
    Written as 2 * (x >= 0) - 1: on a CPU that is 2.5 times faster than torch.where."""
    return (x >= 0).to(x.dtype).mul_(2.0).sub_(1.0)


class _SteSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, window):
        ctx.save_for_backward(x)
        ctx.window = window
        return binarize(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= ctx.window).to(grad.dtype), None


class _ApproxSign(_SteSign):
    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        u = (x.abs() / ctx.window).clamp(max=1.0)
        return grad * (2.0 / ctx.window) * (1.0 - u), None


def ste_sign(x: torch.Tensor, window: float = 1.0) -> torch.Tensor:
    """Forward: sign(x). Backward: straight-through, g_x = g_y * 1{|x| <= window}.

    window = 1 is the hard-tanh derivative of XNOR-Net / BinaryNet.
    """
    return _SteSign.apply(x, window)


def approx_sign(x: torch.Tensor, window: float = 1.0) -> torch.Tensor:
    """Forward: sign(x). Backward: the derivative of a piecewise quadratic that approximates sign,
    g_x = g_y * (2/w) * max(0, 1 - |x|/w) (Bi-Real Net's ApproxSign, scaled to the window w)."""
    return _ApproxSign.apply(x, window)


ESTIMATORS = {"ste": ste_sign, "approx": approx_sign}


class _BlendedSign(torch.autograd.Function):
    """A sign activation in training, in one autograd node: forward
    mix * sign(x) + (1 - mix) * clamp(x, -1, 1), backward the same blend of the estimator's
    derivative and clamp's. The same function as composing the pieces, without the
    intermediate tensors that made the sign layers a third of a CPU training step."""

    @staticmethod
    def forward(ctx, x, estimator, window, mix):
        ctx.save_for_backward(x)
        ctx.estimator, ctx.window, ctx.mix = estimator, window, mix
        y = binarize(x)
        if mix < 1.0:
            y.mul_(mix).add_(x.clamp(-1.0, 1.0), alpha=1.0 - mix)
        return y

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        w, mix = ctx.window, ctx.mix
        a = x.abs()
        if ctx.estimator == "approx":
            d = (1.0 - a / w).clamp_(min=0.0).mul_(2.0 * mix / w)
        else:
            d = (a <= w).to(x.dtype).mul_(mix)
        if mix < 1.0:
            d.add_((a <= 1.0).to(x.dtype), alpha=1.0 - mix)
        return grad * d, None, None, None


def fake_quant(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Forward: symmetric integer quantisation s * round(w / s), s = max|w| / (2^(bits-1) - 1),
    per output channel or for the whole tensor. Backward: identity (straight-through)."""
    qmax = 2 ** (bits - 1) - 1
    if per_channel:
        m = w.detach().abs().flatten(1).amax(1).clamp(min=1e-8)
        scale = (m / qmax).view(-1, *([1] * (w.dim() - 1)))
    else:
        scale = w.detach().abs().amax().clamp(min=1e-8) / qmax
    return w + (torch.round(w / scale) * scale - w).detach()


class SignActivation(nn.Module):
    """sign with a chosen gradient estimator; samples how many inputs fall outside its window.

    Gradual binarisation: while training with `mix` < 1 the forward is
    mix * sign(x) + (1 - mix) * clamp(x, -1, 1), so magnitudes still flow while the net finds
    its features; the trainer raises mix to 1 early in training. In eval mode it is always sign.
    """

    SAMPLE_EVERY = 8  # saturation is counted on every 8th training batch (it is a diagnostic)

    def __init__(self, estimator: str = "ste", window: float = 1.0):
        super().__init__()
        if estimator not in ESTIMATORS:
            raise ValueError("unknown gradient estimator %r" % estimator)
        self.estimator = estimator
        self.window = window
        self.mix = 1.0
        self.real = False  # a real-valued twin (BinaryNet.make_real): clamp, never sign
        self.saturated = 0
        self.seen = 0
        self.calls = 0

    def forward(self, x):
        if self.real:
            return x.clamp(-1.0, 1.0)
        if not self.training:
            return binarize(x)
        if self.calls % self.SAMPLE_EVERY == 0:
            self.saturated += int((x.detach().abs() > self.window).sum())
            self.seen += x.numel()
        self.calls += 1
        return _BlendedSign.apply(x, self.estimator, self.window, self.mix)

    def take_saturation(self) -> float:
        """Fraction of inputs with zero gradient in the sampled batches since the last call,
        then reset."""
        frac = self.saturated / max(self.seen, 1)
        self.saturated = self.seen = 0
        return frac


def binary_weight(w: torch.Tensor) -> torch.Tensor:
    """XNOR-Net weights: alpha * sign(W), alpha = mean|W| per output channel. Gradient reaches
    the real latent weights straight through (window 1 keeps them from growing without bound)."""
    alpha = w.detach().abs().flatten(1).mean(1).clamp(min=1e-8)
    return ste_sign(w, 1.0) * alpha.view(-1, *([1] * (w.dim() - 1)))


def latent_weight(w: torch.Tensor) -> torch.Tensor:
    """A real-valued twin's weights: the latent weights themselves."""
    return w


class InputConv(nn.Module):
    """First layer: real conv on centred pixels (2p - 255) / 255, int8 weights per channel."""

    def __init__(self, cout: int, k: int, stride: int, pool: int):
        super().__init__()
        self.conv = nn.Conv2d(1, cout, k, stride, k // 2)
        self.pool = pool

    def forward(self, x):
        w = fake_quant(self.conv.weight, 8, True).contiguous()
        if w.shape[1] == 1:
            # with one input channel, the contiguous layout is also channels-last's, and from
            # its strides the convolution picks NCHW output, which the pool then takes ten
            # times longer on a CPU than channels-last (host/train.py trains channels-last):
            # the same elements at the same offsets, with strides that say channels-last
            k_h, k_w = w.shape[2], w.shape[3]
            w = w.as_strided(w.shape, (k_h * k_w, 1, k_w, 1))
        y = F.conv2d(
            x,
            w,
            self.conv.bias,
            self.conv.stride,
            self.conv.padding,
        )
        return F.max_pool2d(y, self.pool) if self.pool > 1 else y


class BinaryConv2d(nn.Module):
    """XNOR-Net block: BatchNorm -> sign -> binary conv (padding +1) -> max-pool."""

    def __init__(self, cin, cout, k=3, stride=1, pool=1, estimator="ste", window=1.0):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.sign = SignActivation(estimator, window)
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.stride, self.pad, self.pool = stride, k // 2, pool
        self.weight_fn = binary_weight  # PRANC swaps in plain sign (host.pranc)

    def forward(self, x):
        x = self.sign(self.bn(x))
        if self.pad:  # the engine pads binary maps with +1 (bit 0); train with the same
            x = F.pad(x, (self.pad,) * 4, value=1.0)
        y = F.conv2d(x, self.weight_fn(self.weight), stride=self.stride)
        return F.max_pool2d(y, self.pool) if self.pool > 1 else y


class BinaryLinear(nn.Module):
    """BatchNorm -> sign -> binary fully connected. `bn2d` normalises a conv map per channel
    before it is flattened (so the threshold stays one per channel of the producing conv)."""

    def __init__(self, fin, fout, bn_features, bn2d=False, estimator="ste", window=1.0):
        super().__init__()
        self.bn = nn.BatchNorm2d(bn_features) if bn2d else nn.BatchNorm1d(bn_features)
        self.sign = SignActivation(estimator, window)
        self.weight = nn.Parameter(torch.empty(fout, fin))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.weight_fn = binary_weight

    def forward(self, x):
        x = self.sign(self.bn(x)).flatten(1)
        return F.linear(x, self.weight_fn(self.weight))


class OutputLinear(nn.Module):
    """Last layer: BatchNorm -> sign -> real linear with int16 weights on one shared scale,
    so the deployed class scores are exact integers times one float."""

    def __init__(self, fin, classes, bn_features, bn2d=False, estimator="ste", window=1.0):
        super().__init__()
        self.bn = nn.BatchNorm2d(bn_features) if bn2d else nn.BatchNorm1d(bn_features)
        self.sign = SignActivation(estimator, window)
        self.linear = nn.Linear(fin, classes)

    def forward(self, x):
        x = self.sign(self.bn(x)).flatten(1)
        return F.linear(x, fake_quant(self.linear.weight, 16, False), self.linear.bias)
