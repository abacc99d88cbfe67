"""Architectures by name. Each is a plain description that both the trainer and the packer read.

`bcnn` follows the seed paper (seed-digest section 2): 3 + 6 binary convolutions in two stages,
then 3 fully connected layers, binary except the last, behind a real-valued input layer (XNOR-Net
keeps the first and last layers real), at 64x64. `bcnn96`, the default, is that net at 96x96
with one binary conv fewer in stage 1: codes from 10% of the frame high on boxes of any size and
place need the pixels (see docs/training-notes.md section 5), and a 2-core CPU still trains it
within 15 minutes. `tiny` is
for tests and very small devices.
"""

import torch.nn as nn

from host.layers import BinaryConv2d, BinaryLinear, InputConv, OutputLinear
from protocol.errors import BinsortError

ARCHS = {
    "bcnn": {
        "input": 64,
        "stem": {"cout": 32, "k": 3, "stride": 2, "pool": 2},
        # (cout, pool) per binary conv, 3x3 stride 1; stage 1 then stage 2
        "convs": [(32, 1), (32, 1), (32, 2), (64, 1), (64, 1), (64, 2), (64, 1), (64, 1), (64, 1)],
        "dense": [128, 128],  # binary hidden widths; the real output layer follows
        "epochs": 12,
        "demo_count": 3000,  # synthetic images per label in `binsort demo`
    },
    # the default: bcnn at 96x96, where a code 10% of the frame high is 10 pixels, not 6, with
    # two binary convs in stage 1, not three: 11% less time an epoch, and no less accurate
    # (docs/training-notes.md section 5 has both measurements)
    "bcnn96": {
        "input": 96,
        "stem": {"cout": 32, "k": 3, "stride": 2, "pool": 2},
        "convs": [(32, 1), (32, 2), (64, 1), (64, 1), (64, 2), (64, 1), (64, 1), (64, 1)],
        "dense": [128, 128],
        "epochs": 28,
        "demo_count": 3000,
        "demo_epochs": 15,
    },
    "tiny": {
        "input": 32,
        "stem": {"cout": 32, "k": 3, "stride": 2, "pool": 2},
        "convs": [(32, 2), (64, 2)],
        "dense": [64],
        "epochs": 8,
        "demo_count": 300,
    },
}


DEFAULT_ARCH = "bcnn96"


def arch_spec(name: str) -> dict:
    if name not in ARCHS:
        raise BinsortError("unknown architecture %r (choose from %s)" % (name, ", ".join(ARCHS)))
    return ARCHS[name]


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

    def sign_layers(self) -> list:
        """(name, SignActivation) for every binarised activation, in order."""
        return [
            (n.rsplit(".sign", 1)[0], m) for n, m in self.named_modules() if n.endswith(".sign")
        ]
