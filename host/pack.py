"""Trained checkpoint -> deployed `.bnn`: pack binary weights, fold BatchNorm + sign into integer
thresholds, quantise the first and last layers, and record golden self-test inputs.

The deployed model differs from the trained float model only where a float BatchNorm output
lands within rounding of zero; the parity tests measure how often that changes a label.
"""

import numpy as np
import torch

from edge.engine.bits import pack_signs
from edge.imaging.preprocess import PREPROCESS_KIND, preprocess
from host.models import BinaryNet, arch_spec
from protocol import bnn
from protocol.errors import BinsortError, FormatError
from protocol.fold import INT32_MAX, INT32_MIN, fold_thresholds

GOLDEN_COUNT = 4  # seeded self-test inputs (GSEE): 8 bytes a class each in the file


def _bn_params(bn) -> tuple:
    return (
        bn.weight.detach().double().tolist(),
        bn.bias.detach().double().tolist(),
        bn.running_mean.double().tolist(),
        bn.running_var.double().tolist(),
        bn.eps,
    )


def _thresholds(a, b, bn) -> dict:
    """Fold `y = a * acc + b` and the next block's BatchNorm + sign (protocol.fold): the
    layer's thresholds, flips and NORM (the ratios beta/gamma that re-estimating the
    thresholds from a device's own frames needs, edge.engine.recalibrate)."""
    gamma, beta, mean, var, eps = _bn_params(bn)
    ts, flips = fold_thresholds(a, b, gamma, beta, mean, var, eps)
    packed_flips = np.packbits(np.array(flips, dtype=bool), bitorder="little").tobytes()
    ratios = [
        bt / g if g != 0 and t not in (INT32_MIN, INT32_MAX) else None
        for g, bt, t in zip(gamma, beta, ts, strict=True)
    ]
    return {
        "thresholds": np.array(ts, dtype="<i4").tobytes(),
        "flips": packed_flips,
        "norm": bnn.pack_norm(ratios),
    }


def _alpha(w: torch.Tensor) -> list:
    """The XNOR-Net scale the trainer used, mean|W| per output channel (host.layers)."""
    return w.detach().abs().flatten(1).mean(1).clamp(min=1e-8).double().tolist()


def _sign_bits(w: np.ndarray) -> bytes:
    """+-1 weights with the channel axis last -> packed bytes (bit 1 = -1, sign(0) = +1)."""
    return pack_signs(w < 0).tobytes()


def _hwc_order(w: torch.Tensor, channels: int, h: int, wdt: int) -> np.ndarray:
    """Dense weights over a flattened (C, H, W) map -> the engine's (H, W, C) input order."""
    return (
        w.detach()
        .reshape(w.shape[0], channels, h, wdt)
        .permute(0, 2, 3, 1)
        .reshape(w.shape[0], -1)
        .numpy()
    )


def deployed_layers(model: BinaryNet) -> list:
    """The model's layers in deployed form (protocol.bnn.Layer), in execution order."""
    spec = arch_spec(model.arch)
    size = spec["input"]
    # the BatchNorm that follows each producing layer
    consumers = [*model.convs, *model.dense, model.head]
    layers = []

    stem = model.stem.conv
    w = stem.weight.detach()
    scale = w.abs().flatten(1).amax(1).clamp(min=1e-8) / 127  # as fake_quant(w, 8, per channel)
    wq = torch.round(w / scale.view(-1, 1, 1, 1)).clamp(-127, 127).to(torch.int8)
    k, s = stem.kernel_size[0], stem.stride[0]
    a = (scale.double() / 255).tolist()
    folded = _thresholds(a, stem.bias.detach().double().tolist(), consumers[0].bn)
    weights = wq.permute(0, 2, 3, 1).contiguous().numpy().tobytes()  # (cout, k, k, cin)
    layer = bnn.Layer(
        kind=bnn.CONV_U8,
        k=k,
        stride=s,
        pad=k // 2,
        cin=1,
        cout=stem.out_channels,
        in_h=size,
        in_w=size,
        pool=model.stem.pool,
        weights=weights,
        **folded,
    )
    layers.append(layer)

    for i, conv in enumerate(model.convs):
        h, wd = layers[-1].out_shape()
        w = conv.weight.detach()
        folded = _thresholds(_alpha(w), [0.0] * w.shape[0], consumers[i + 1].bn)
        bits = _sign_bits(w.permute(0, 2, 3, 1).contiguous().numpy())  # (cout, k, k, cin)
        layers.append(
            bnn.Layer(
                kind=bnn.BCONV,
                k=w.shape[2],
                stride=conv.stride,
                pad=conv.pad,
                cin=w.shape[1],
                cout=w.shape[0],
                in_h=h,
                in_w=wd,
                pool=conv.pool,
                weights=bits,
                **folded,
            )
        )

    for i, dense in enumerate(model.dense):
        w = dense.weight.detach()
        prev = layers[-1]
        if prev.is_conv:
            oh, ow = prev.out_shape()
            w_np = _hwc_order(w, prev.cout, oh, ow)
        else:
            w_np = w.numpy()
        folded = _thresholds(_alpha(w), [0.0] * w.shape[0], consumers[len(model.convs) + i + 1].bn)
        layers.append(
            bnn.Layer(
                **bnn.dense_geometry(bnn.BDENSE, w.shape[1], w.shape[0]),
                weights=_sign_bits(w_np),
                **folded,
            )
        )

    lin = model.head.linear
    prev = layers[-1]
    w = lin.weight.detach()
    scale_t = w.abs().amax().clamp(min=1e-8) / 32767  # float32, exactly as fake_quant(w, 16)
    wq = torch.round(w / scale_t).clamp(-32767, 32767)
    wq = _hwc_order(wq, prev.cout, *prev.out_shape()) if prev.is_conv else wq.numpy()
    out_scale = float(scale_t)
    bias = np.round(lin.bias.detach().double().numpy() / out_scale).astype("<i4")
    layers.append(
        bnn.Layer(
            bnn.DENSE_OUT,
            1,
            1,
            0,
            w.shape[1],
            w.shape[0],
            1,
            1,
            1,
            wq.astype("<i2").tobytes(),
            bias=bias.tobytes(),
            scale=out_scale,
        )
    )
    return layers


def rendered_inputs(labels: list, size: int, count: int = 2) -> np.ndarray:
    """Synthetic frames of the first labels, through the edge preprocessing: the self-test
    inputs of format 1.0 files (GOLD, stored whole), kept to compare the two."""
    from edge.imaging.box_images import render

    frames = [np.asarray(render(1234, "golden", labels[i % len(labels)], i)) for i in range(count)]
    return np.stack([preprocess(f, size, size) for f in frames])


def seeded_golden(model: "bnn.BnnModel", count: int = GOLDEN_COUNT, first_seed: int = 1):
    """(seed, [(input bytes, scores)]): the first seed from `first_seed` whose `count` drawn
    inputs all get different scores from the host reference, so that no two inputs test the
    same thing; if none of 32 seeds does (an untrained net may give many inputs one answer),
    the one with the most different scores."""
    from host.reference import reference_scores

    h, w = model.input_shape
    best = None
    for seed in range(first_seed, first_seed + 32):
        images = [bnn.seeded_input(seed, i, h, w) for i in range(count)]
        x = np.stack([np.frombuffer(im, np.uint8).reshape(h, w) for im in images])
        scores = [[int(v) for v in s] for s in reference_scores(model, x)]
        distinct = len({tuple(s) for s in scores})
        if best is None or distinct > best[0]:
            best = (distinct, seed, list(zip(images, scores, strict=True)))
        if distinct == count:
            break
    return best[1], best[2]


def packed_metrics(ckpt: dict) -> dict:
    """The training summary a packed model carries: the checkpoint's, less what META already
    says (arch, labels) and the launch detail (world_size): bytes a first stage on a weak
    link should not spend twice."""
    metrics = ckpt.get("metrics", {})
    return {k: v for k, v in metrics.items() if k not in ("arch", "labels", "world_size")}


def model_meta(ckpt: dict, size: int, version: int) -> dict:
    """What every packed model says about itself (`.bnn` META, `.pranc` HEAD start from it)."""
    return {
        "format": "binsort-bnn",
        "arch": ckpt["arch"],
        "labels": list(ckpt["labels"]),
        "input": {"height": size, "width": size, "channels": 1, "preprocess": PREPROCESS_KIND},
        "model_id": ckpt["model_id"],
        "version": version,
        "created": ckpt["created"],
        "metrics": packed_metrics(ckpt),
    }


def write_with_golden(meta: dict, layers: list) -> bytes:
    """The `.bnn` bytes, with seeded self-test inputs whose scores the host reference
    computes. The layers are checked against the format first (binary inputs a multiple of
    8, geometry, the chain), so a model the format cannot hold is one clear error."""
    for index, layer in enumerate(layers):
        try:
            bnn.check_geometry(layer, index)
        except FormatError as e:
            raise BinsortError("this model cannot be packed as a .bnn: %s" % e) from None
    seed, golden = seeded_golden(bnn.BnnModel(meta, layers, [], b""))
    return bnn.write_bnn(meta, layers, golden, golden_seed=seed)


def pack_model(ckpt: dict, model: BinaryNet, version: int = 1) -> bytes:
    """The whole `.bnn` for a trained model, golden scores computed by the host reference."""
    size = arch_spec(model.arch)["input"]
    return write_with_golden(model_meta(ckpt, size, version), deployed_layers(model))


def float_state_bytes(model: BinaryNet) -> int:
    """Size of the model's float32 state dict as torch saves it: the baseline for the ratio."""
    import io

    buf = io.BytesIO()
    torch.save({k: v.float() for k, v in model.state_dict().items()}, buf)
    return buf.tell()
