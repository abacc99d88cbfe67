"""The binary net that an architecture (host/archs.py) describes, as a torch module."""

import torch.nn as nn

from host.archs import ARCHS, DEFAULT_ARCH, arch_spec
from host.layers import BinaryConv2d, BinaryLinear, InputConv, OutputLinear, latent_weight

__all__ = ["ARCHS", "DEFAULT_ARCH", "BinaryNet", "arch_spec"]


class BinaryNet(nn.Module):
    """Input conv -> binary convs -> binary dense layers -> real output layer."""

    def __init__(self, arch: str, classes: int, estimator: str = "ste", window: float = 1.0):
        super().__init__()
        spec = arch_spec(arch)
        self.arch, self.classes = arch, classes
        stem = spec["stem"]
        self.stem = InputConv(stem["cout"], stem["k"], stem["stride"], stem["pool"])
        size = (spec["input"] + 2 * (stem["k"] // 2) - stem["k"]) // stem["stride"] + 1
        size //= stem["pool"]
        cin = stem["cout"]
        convs = []
        for cout, pool in spec["convs"]:
            convs.append(BinaryConv2d(cin, cout, 3, 1, pool, estimator, window))
            cin, size = cout, size // pool
        self.convs = nn.ModuleList(convs)
        fin, bn_features, bn2d = cin * size * size, cin, True
        dense = []
        for width in spec["dense"]:
            dense.append(BinaryLinear(fin, width, bn_features, bn2d, estimator, window))
            fin, bn_features, bn2d = width, width, False
        self.dense = nn.ModuleList(dense)
        self.head = OutputLinear(fin, classes, bn_features, bn2d, estimator, window)

    def forward(self, x):
        """x: (N, 1, H, W) float, pixels already centred as (2p - 255) / 255."""
        x = self.stem(x)
        for layer in self.convs:
            x = layer(x)
        for layer in self.dense:
            x = layer(x)
        return self.head(x)

    def make_real(self) -> "BinaryNet":
        """Turn this net into its real-valued twin, in place: real weights and clamped
        activations where the binary net has signs, the same parameters and state dict. The
        twin trains quickly to a better accuracy and then teaches the binary net
        (host.train: it starts the binary net and distils into it)."""
        for _, m in self.sign_layers():
            m.real = True
        for layer in list(self.convs) + list(self.dense):
            layer.weight_fn = latent_weight
        return self

    def sign_layers(self) -> list:
        """(name, SignActivation) for every binarised activation, in order."""
        return [
            (n.rsplit(".sign", 1)[0], m) for n, m in self.named_modules() if n.endswith(".sign")
        ]
