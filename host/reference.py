"""The host's reference of a deployed model: what a `.bnn` computes, in torch.

It takes the deployed layers (packed weights, folded thresholds) and computes them by a different
route from the edge engine: +-1 values in float64 convolutions (exact, as every partial sum is an
integer far below 2**53), max-pooling on the integer accumulators before the threshold, and
dense layers over the (H, W, C) flattening. The edge engines must produce
exactly these integer scores.
"""

import numpy as np
import torch
import torch.nn.functional as F

from edge.engine.bits import unpack_signs
from protocol.bnn import BCONV, BDENSE, CONV_U8, BnnModel


def _signs(layer, shape) -> torch.Tensor:
    per_row = layer.weight_bytes() // layer.cout
    packed = np.frombuffer(layer.weights, dtype=np.uint8).reshape(layer.cout, per_row)
    return torch.from_numpy(unpack_signs(packed, per_row * 8).astype(np.float64)).reshape(shape)


def _threshold(layer, acc: torch.Tensor) -> torch.Tensor:
    """Max-pool the accumulator (the trained model pools a * acc + b with a > 0 before its
    BatchNorm), then +-1 per (acc < T) XOR flip."""
    t = torch.from_numpy(np.frombuffer(layer.thresholds, dtype="<i4").astype(np.float64))
    flip = torch.from_numpy(
        np.unpackbits(
            np.frombuffer(layer.flips, dtype=np.uint8), count=layer.cout, bitorder="little"
        ).astype(bool)
    )
    if acc.dim() == 4:
        if layer.pool > 1:
            acc = F.max_pool2d(acc, layer.pool)
        t, flip = t.view(1, -1, 1, 1), flip.view(1, -1, 1, 1)
    negative = (acc < t) ^ flip
    return 1.0 - 2.0 * negative.double()


# images a pass: float64 maps of bcnn144's first binary layer take 0.6 MB an image, and the
# demo's 3,000 test images in one pass held 12.8 GB (its peak resident memory)
CHUNK = 256


def reference_scores(model: BnnModel, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) model inputs -> int64 (N, classes) class scores, CHUNK images a pass."""
    images = np.asarray(images, dtype=np.uint8)
    parts = [_scores(model, images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)]
    return np.concatenate(parts) if parts else _scores(model, images)


def _scores(model: BnnModel, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).double().unsqueeze(1)
    for layer in model.layers:
        if layer.kind == CONV_U8:
            w = np.frombuffer(layer.weights, dtype=np.int8).reshape(layer.cout, layer.k, layer.k, 1)
            w = torch.from_numpy(w.astype(np.float64)).permute(0, 3, 1, 2)
            acc = F.conv2d(2.0 * x - 255.0, w, stride=layer.stride, padding=layer.pad)
            x = _threshold(layer, acc)
        elif layer.kind == BCONV:
            w = _signs(layer, (layer.cout, layer.k, layer.k, layer.cin)).permute(0, 3, 1, 2)
            xp = F.pad(x, (layer.pad,) * 4, value=1.0)
            x = _threshold(layer, F.conv2d(xp, w, stride=layer.stride))
        elif layer.kind == BDENSE:
            flat = x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x
            x = _threshold(layer, flat @ _signs(layer, (layer.cout, layer.cin)).T)
        else:
            flat = x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x
            w = np.frombuffer(layer.weights, dtype="<i2").reshape(layer.cout, layer.cin)
            bias = np.frombuffer(layer.bias, dtype="<i4")
            scores = flat @ torch.from_numpy(w.astype(np.float64)).T + torch.from_numpy(
                bias.astype(np.float64)
            )
            return scores.round().long().numpy()
    raise ValueError("model has no output layer")
