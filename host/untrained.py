"""Untrained models of a given architecture, for benchmarks, cross-checks and tests: the right
shape and the same files as a trained run, not a useful classifier. One place builds them, so a
change to the checkpoint or the net reaches every tool."""

import torch

from host.models import BinaryNet, arch_spec
from host.pack import pack_model

LABELS = ["F06", "K11", "S19", "V22", "empty"]


def untrained_checkpoint(arch: str, labels=None, model_id: str = "untrained") -> dict:
    """The checkpoint fields pack_model and pack_pranc read, for a model that was not trained."""
    return {
        "arch": arch,
        "labels": list(labels or LABELS),
        "model_id": model_id,
        "created": "2026-01-01T00:00:00Z",
        "metrics": {},
    }


def untrained_net(arch: str, classes: int = len(LABELS), seed: int = 0) -> BinaryNet:
    """A freshly initialised net in eval mode (BatchNorm at its initial statistics)."""
    torch.manual_seed(seed)
    return BinaryNet(arch, classes).eval()


def lively_net(arch: str, seed: int = 1, classes: int = len(LABELS)) -> BinaryNet:
    """An untrained net whose scores still differ from image to image: random BatchNorm
    gammas (a seventh zero, about half negative, so flipped and constant thresholds occur) and
    betas, with running statistics measured on random images, so no layer saturates. What an
    engine cross-check needs: a wrong layer cannot hide behind constant outputs."""
    torch.manual_seed(seed)
    model = BinaryNet(arch, classes)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)]
    for m in bns:
        m.weight.data = torch.randn(m.num_features)
        m.weight.data[::7] = 0
        m.bias.data = torch.randn(m.num_features) * 0.3
        m.momentum = None  # a plain average over the calibration batches
    side = arch_spec(arch)["input"]
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(32, 1, side, side) * 2 - 1)
    return model.eval()


def packed(arch: str, lively: bool = False, seed: int = 0, model_id: str = "untrained") -> bytes:
    """The `.bnn` bytes of an untrained (or lively) net of `arch`."""
    net = lively_net(arch, seed) if lively else untrained_net(arch, seed=seed)
    return pack_model(untrained_checkpoint(arch, model_id=model_id), net)
