"""The host's reference of a deployed model: what a `.bnn` computes, in torch.

It takes the deployed layers (packed weights, folded thresholds) and computes them by a different
route from the edge engine: +-1 values in convolutions written as one matrix product over the
unfolded input (im2col), max-pooling on the integer accumulators before the threshold, and
dense layers over the (H, W, C) flattening. The edge engines must produce exactly these
integer scores.

Every product and partial sum is an integer, so a layer is exact in float32 when the sum of
its terms' magnitudes stays below 2**24, whatever order the matrix product adds them in:
a binary layer's fan-in (576 for 64 channels of 3x3), an input conv's k*k*255*128 (1.6
million at 7x7). A layer whose bound is not below 2**24 (none of the architectures here)
runs in float64, exact below 2**53; so does the output layer, whose int32 bias can pass
2**24. A convolution is not left to the backend: oneDNN may pick a Winograd-style
algorithm, whose transforms are not integer.
"""

import numpy as np
import torch
import torch.nn.functional as F

from edge.engine.bits import unpack_signs
from protocol.bnn import BCONV, BDENSE, CONV_U8, BnnModel

EXACT_FLOAT32 = 2**24


def _signs(layer, shape, dtype: torch.dtype) -> torch.Tensor:
    per_row = layer.weight_bytes() // layer.cout
    packed = np.frombuffer(layer.weights, dtype=np.uint8).reshape(layer.cout, per_row)
    signs = unpack_signs(packed, per_row * 8).astype(np.float32)
    return torch.from_numpy(signs).to(dtype).reshape(shape)


def _dtype(bound: int) -> torch.dtype:
    """float32 where a layer's sums of |terms| stay below 2**24, else float64."""
    return torch.float32 if bound < EXACT_FLOAT32 else torch.float64


def _conv(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    """A convolution without padding as one matrix product over the unfolded input."""
    n, _, h, wd = x.shape
    cout, _, k, _ = w.shape
    cols = F.unfold(x, k, stride=stride)  # (N, cin * k * k, positions), cin slowest
    out = w.reshape(cout, -1) @ cols
    return out.view(n, cout, (h - k) // stride + 1, (wd - k) // stride + 1)


def _threshold(layer, acc: torch.Tensor) -> torch.Tensor:
    """Max-pool the accumulator (the trained model pools a * acc + b with a > 0 before its
    BatchNorm), then +-1 per (acc < T) XOR flip, in the accumulator's dtype. The comparison
    is in float64, where every int32 threshold is exact."""
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
    negative = (acc.double() < t) ^ flip
    return 1.0 - 2.0 * negative.to(acc.dtype)


# images a pass: bcnn144's first binary layer unfolds to 1.3 MB an image (float32), and the
# demo's 3,000 test images in one float64 pass once held 12.8 GB (its peak resident memory)
CHUNK = 256


def reference_scores(model: BnnModel, images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) model inputs -> int64 (N, classes) class scores, CHUNK images a pass."""
    images = np.asarray(images, dtype=np.uint8)
    parts = [_scores(model, images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)]
    return np.concatenate(parts) if parts else _scores(model, images)


def _scores(model: BnnModel, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).unsqueeze(1)
    for layer in model.layers:
        if layer.kind == CONV_U8:
            dtype = _dtype(layer.k * layer.k * layer.cin * 255 * 128)
            w = np.frombuffer(layer.weights, dtype=np.int8).reshape(layer.cout, layer.k, layer.k, 1)
            w = torch.from_numpy(w.astype(np.float32)).to(dtype).permute(0, 3, 1, 2)
            centred = F.pad(2.0 * x.to(dtype) - 255.0, (layer.pad,) * 4)
            x = _threshold(layer, _conv(centred, w, layer.stride))
        elif layer.kind == BCONV:
            dtype = _dtype(layer.k * layer.k * layer.cin)
            w = _signs(layer, (layer.cout, layer.k, layer.k, layer.cin), dtype).permute(0, 3, 1, 2)
            xp = F.pad(x.to(dtype), (layer.pad,) * 4, value=1.0)
            x = _threshold(layer, _conv(xp, w, layer.stride))
        elif layer.kind == BDENSE:
            dtype = _dtype(layer.cin)
            flat = x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x
            x = _threshold(layer, flat.to(dtype) @ _signs(layer, (layer.cout, layer.cin), dtype).T)
        else:
            flat = (x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x).double()
            w = np.frombuffer(layer.weights, dtype="<i2").reshape(layer.cout, layer.cin)
            bias = np.frombuffer(layer.bias, dtype="<i4")
            scores = flat @ torch.from_numpy(w.astype(np.float64)).T + torch.from_numpy(
                bias.astype(np.float64)
            )
            return scores.round().long().numpy()
    raise ValueError("model has no output layer")
