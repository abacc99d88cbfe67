"""Tier 0 of the weak-link updates: a model's thresholds re-estimated from the device's own
unlabelled frames, with nothing sent (docs/format.md, "NORM"; docs/training-notes.md section 6).

A threshold folds the producer's accumulator and the next BatchNorm into one comparison
(protocol.fold): with `y = a * acc + b` and the BatchNorm's statistics taken over `acc`,

    tau = m - (beta / gamma) * sqrt(v + eps / a**2)

where m and v are the mean and variance of the (pooled) accumulator in that channel. A model
packed with NORM carries beta/gamma per channel; the frames give m and v. `eps / a**2` is
dropped: it is below 1e-3 of v in every channel of the trained models, and a channel whose
accumulator never varies on the frames keeps its threshold. This is AdaBN (re-estimated
BatchNorm statistics) on the deployed, folded model.

Layers are re-estimated in execution order, each from the outputs of the layers before it
with their new thresholds, as a BatchNorm in training mode sees them. Frames go through in
chunks, the statistics merge chunk by chunk (Chan's formula, no cancellation), and only the
packed bits between two layers are kept for every frame: 2,000 frames of the default model
need about 5 MB.
"""

import hashlib
import json
import math
import time

import numpy as np

from edge.engine.numpy_engine import HAS_BITWISE_COUNT, NumpyEngine, _Prepared, pad_map, patches
from protocol import bnn
from protocol.errors import BinsortError
from protocol.fold import INT32_MAX, INT32_MIN

MIN_FRAMES = 200  # fewer frames give statistics too noisy to trust
CHUNK = 64


class Stats:
    """Per-channel count, mean and sum of squared deviations, merged batch by batch."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, values: np.ndarray) -> None:
        x = values.reshape(-1, values.shape[-1]).astype(np.float64)
        n = len(x)
        if not n:
            return
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        total = self.n + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * n / total)
        self.n = total

    @property
    def var(self) -> np.ndarray:
        return self.m2 / max(self.n, 1)


def _accumulators(p: _Prepared, x: np.ndarray) -> np.ndarray:
    """A layer's pooled integer accumulators (as float64) for one chunk of its inputs."""
    layer = p.layer
    if layer.kind == bnn.CONV_U8:
        centred = pad_map(2 * x.astype(np.float32)[..., None] - 255, layer.pad)
        return p.pool_acc(patches(centred, layer.k, layer.stride) @ p.weights).astype(np.float64)
    if layer.kind == bnn.BCONV:
        xp = pad_map(x, layer.pad)
        if HAS_BITWISE_COUNT:
            pops = p.pool_acc(NumpyEngine._conv_popcounts(p, xp), np.minimum)
            return p.n - 2 * pops.astype(np.float64)
        acc = NumpyEngine._binary_acc(p, patches(xp, layer.k, layer.stride))
        return p.pool_acc(acc).astype(np.float64)
    flat = x.reshape(len(x), -1)
    if HAS_BITWISE_COUNT:
        return p.n - 2 * NumpyEngine._popcounts(p, flat).astype(np.float64)
    return NumpyEngine._binary_acc(p, flat).astype(np.float64)


def new_thresholds(layer: bnn.Layer, stats: Stats) -> "tuple[bytes, int]":
    """The layer's thresholds from the frames' statistics and its NORM ratios; and how many
    channels were re-estimated (the others keep theirs)."""
    old = np.frombuffer(layer.thresholds, dtype="<i4").astype(np.int64)
    flips = np.unpackbits(
        np.frombuffer(layer.flips, dtype=np.uint8), count=layer.cout, bitorder="little"
    )
    ratios = bnn.norm_ratios(layer)
    out = old.copy()
    moved = 0
    for c in range(layer.cout):
        r, var = ratios[c], stats.var[c]
        if r is None or not var > 0 or old[c] in (INT32_MIN, INT32_MAX):
            continue
        tau = stats.mean[c] - r * math.sqrt(var)
        t = math.ceil(tau) if not flips[c] else math.floor(tau) + 1
        out[c] = max(INT32_MIN, min(INT32_MAX, t))
        moved += 1
    return out.astype("<i4").tobytes(), moved


def recalibrate(
    model: bnn.BnnModel, images: np.ndarray, log=None, source: "str | None" = None
) -> "tuple[bytes, dict]":
    """(the `.bnn` bytes of `model` with every threshold re-estimated on `images`, a report).
    `images` are uint8 (N, H, W) model inputs of the line's boxes, unlabelled; `source` is the
    SHA-256 of the model's file (META records it; by default that of the file write_bnn makes
    of `model`). BinsortError when the model carries no NORM or there are too few frames."""
    images = np.asarray(images, dtype=np.uint8)
    h, w = model.input_shape
    if images.ndim != 3 or images.shape[1:] != (h, w):
        raise BinsortError("frames of shape %s are not %dx%d model inputs" % (images.shape, h, w))
    if len(images) < MIN_FRAMES:
        raise BinsortError(
            "%d frames are too few to re-estimate thresholds from (at least %d)"
            % (len(images), MIN_FRAMES)
        )
    thresholded = [layer for layer in model.layers if layer.kind != bnn.DENSE_OUT]
    if any(layer.norm is None for layer in thresholded):
        raise BinsortError(
            "model %s carries no NORM section (packed by binsort before format 1.2, or a "
            ".pranc stream): its thresholds cannot be re-estimated; pack it again"
            % model.meta.get("model_id", "?")
        )
    started = time.time()
    x = images
    layers, report = [], []
    for layer in model.layers:
        if layer.kind == bnn.DENSE_OUT:
            layers.append(layer)
            break
        p = _Prepared(layer)
        stats = Stats(layer.cout)
        for i in range(0, len(x), CHUNK):
            stats.add(_accumulators(p, x[i : i + CHUNK]))
        thresholds, moved = new_thresholds(layer, stats)
        new = layer.replaced(thresholds=thresholds)
        q = _Prepared(new)
        # the accumulators once more, now thresholded: keeping them from the first pass would
        # take 150 MB for 2,000 frames at the input layer; the bits take 5 MB
        x = np.concatenate(
            [q.threshold(_accumulators(q, x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)]
        )
        old_t = np.frombuffer(layer.thresholds, dtype="<i4").astype(np.float64)
        new_t = np.frombuffer(thresholds, dtype="<i4").astype(np.float64)
        sd = np.sqrt(np.maximum(stats.var, 1e-12))
        shift = np.abs(new_t - old_t) / sd
        report.append(
            {
                "layer": len(layers),
                "channels": layer.cout,
                "moved": moved,
                "median_shift_sd": round(float(np.median(shift[np.isfinite(shift)])), 3),
            }
        )
        if log:
            log("layer %d: %d of %d thresholds re-estimated" % (len(layers), moved, layer.cout))
        layers.append(new)
    if source is None:
        packed = bnn.write_bnn(model.meta, model.layers, model.golden, model.golden_seed)
        source = hashlib.sha256(packed).hexdigest()
    meta = dict(model.meta)
    meta["recalibrated"] = {
        "from": source,
        "frames": int(len(images)),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    new_model = bnn.BnnModel(meta, layers, [], b"", model.golden_seed)
    engine = NumpyEngine(new_model)
    inputs = [image for image, _ in model.golden]  # drawn from the seed, or stored
    arrays = np.stack([np.frombuffer(im, np.uint8).reshape(h, w) for im in inputs])
    golden = [
        (im, [int(v) for v in s]) for im, s in zip(inputs, engine.scores(arrays), strict=True)
    ]
    data = bnn.write_bnn(meta, layers, golden, golden_seed=model.golden_seed)
    old_labels = NumpyEngine(model).scores(images).argmax(axis=1)
    new_labels = engine.scores(images).argmax(axis=1)
    summary = {
        "frames": int(len(images)),
        "at": meta["recalibrated"]["at"],
        "from": source,
        "sha256": hashlib.sha256(data).hexdigest(),
        "decisions_changed": round(float((old_labels != new_labels).mean()), 4),
        "seconds": round(time.time() - started, 1),
        "layers": report,
    }
    json.dumps(summary)  # plain types only
    return data, summary
