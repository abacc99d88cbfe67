"""A PRANC run -> a `.pranc` stream (or the `.bnn` of its complete model).

The deployed layers come from edge.engine.stream.build_layers fed with the host's own torch
reconstruction, so the stream's per-chunk CRC32 is what every edge must reproduce. The host
measures each prefix's accuracy on the test images (the exact deployed model, through the
host reference) and writes it into the chunk.
"""

import numpy as np
import torch

from edge.engine.stream import build_layers, model_meta
from host.pack import deployed_layers, packed_metrics, write_with_golden
from host.pack import model_meta as host_meta
from host.pranc import PrancNet
from protocol import bnn
from protocol import pranc as fmt
from protocol.fold import fold_thresholds
from protocol.prng import HASH_ID, HASH_VERSION

_KIND_NAMES = {v: k for k, v in fmt.KINDS.items()}


def _f32(t: torch.Tensor) -> list:
    return t.detach().float().cpu().double().tolist()


def stream_head(ckpt: dict, model: PrancNet, version: int) -> "tuple[dict, list]":
    """(HEAD dict, geometry layers)."""
    model.set_weights()
    shells = deployed_layers(model.net)
    layers = []
    for shell, k in zip(shells, model.ks, strict=True):
        d = {g: getattr(shell, g) for g in fmt.GEOMETRY}
        d.update(kind=_KIND_NAMES[shell.kind], alphas=k)
        layers.append(d)
    head = host_meta(ckpt, shells[0].in_h, version)
    head.update(
        {
            "format": "binsort-pranc",
            "seed": model.seed,
            "hash": {"id": HASH_ID, "version": HASH_VERSION},
            "basis": model.basis_kind,
            "chunks": model.chunks,
            "layers": layers,
        }
    )
    return head, fmt.geometry_layers(head)


def fixed_entries(model: PrancNet) -> list:
    """FIXD: scales, the first layer's bias and next BatchNorm, binary thresholds, head bias.
    Binary layers have no XNOR scale under PRANC (a = 1), so their thresholds do not depend
    on alpha and the host folds them once for every prefix."""
    net = model.net
    scales = model.layer_scales()
    consumers = [*net.convs, *net.dense, net.head]
    entries = []
    bn = consumers[0].bn
    entries.append(
        {
            "scale": scales[0],
            "bias": _f32(net.stem.conv.bias),
            "eps": float(bn.eps),
            "gamma": _f32(bn.weight),
            "beta": _f32(bn.bias),
            "mean": _f32(bn.running_mean),
            "var": _f32(bn.running_var),
        }
    )
    for i in range(1, len(consumers)):
        bn = consumers[i].bn
        c = bn.num_features
        ts, flips = fold_thresholds(
            [1.0] * c,
            [0.0] * c,
            _f32(bn.weight),
            _f32(bn.bias),
            _f32(bn.running_mean),
            _f32(bn.running_var),
            bn.eps,
        )
        entries.append(
            {
                "scale": scales[i],
                "thresholds": np.array(ts, dtype="<i4").tobytes(),
                "flips": np.packbits(np.array(flips, dtype=bool), bitorder="little").tobytes(),
            }
        )
    entries.append({"scale": scales[-1], "bias": _f32(net.head.linear.bias)})
    return entries


def prefix_layers(model: PrancNet, head: dict, fixed: bytes, keep: int) -> list:
    thetas = [t.reshape(-1).numpy() for t in model.exact_thetas(keep)]
    return build_layers(head, fixed, thetas)


def accuracy_of(layers: list, meta: dict, images: np.ndarray, truth: np.ndarray) -> float:
    from host.reference import reference_scores

    scores = reference_scores(bnn.BnnModel(meta, layers, [], b""), images)
    return float((scores.argmax(1) == truth).mean())


def pack_pranc(ckpt: dict, model: PrancNet, test, version: int = 1, log=None) -> bytes:
    """The whole stream. `test` = (uint8 images, labels) to measure every prefix on, or None."""
    model.eval()
    head, shells = stream_head(ckpt, model, version)
    fixed = fmt.fixed_payload(shells, fixed_entries(model))
    out = [fmt.header(), fmt.head_record(head), fmt.record(b"FIXD", fixed)]
    ints = [a.numpy() for a in model.int_alphas()]
    for c in range(model.chunks):
        layers = prefix_layers(model, head, fixed, c + 1)
        acc = None
        if test is not None:
            acc = accuracy_of(layers, model_meta(head, c + 1), *test)
        runs = [
            a[fmt.chunk_end(k, model.chunks, c) : fmt.chunk_end(k, model.chunks, c + 1)]
            for a, k in zip(ints, model.ks, strict=True)
        ]
        out.append(fmt.chunk_record(c, model.chunks, runs, acc, fmt.layers_digest(layers)))
        if log:
            log(
                "chunk %d/%d: %d bytes so far, accuracy %s"
                % (c + 1, model.chunks, sum(map(len, out)), "-" if acc is None else "%.4f" % acc)
            )
    body = b"".join(out)
    return body + fmt.done_record(body)


def pack_pranc_bnn(ckpt: dict, model: PrancNet, version: int = 1) -> bytes:
    """The `.bnn` of the complete model (what the edge rebuilds from the whole stream), with
    golden self-test inputs like any packed model."""
    model.eval()
    head, shells = stream_head(ckpt, model, version)
    fixed = fmt.fixed_payload(shells, fixed_entries(model))
    layers = prefix_layers(model, head, fixed, model.chunks)
    meta = model_meta(head, model.chunks)
    meta["metrics"] = packed_metrics(ckpt)
    return write_with_golden(meta, layers)
