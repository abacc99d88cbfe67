"""Training an update that fits a byte budget as a `.bsd` delta (issue 19, protocol.delta).

A fine-tuning run (`binsort train --init RUN --delta-budget BYTES`) first trains as usual, every
weight free. Then it keeps only the binary weights whose sign it changed most firmly, as many
as the budget leaves after tier 1 (new thresholds, sent as steps from the old ones, input conv
and output layer), puts every other binary weight back to the base model's, and trains
BatchNorm, the input conv and the output layer again around those flips with the binary weights
frozen. `binsort pack RUN --delta-from BASE.bnn` then writes the delta.
"""

import struct

import torch

from host.pack import deployed_layers, pack_model
from protocol import bnn, delta, records
from protocol.errors import BinsortError

# bytes kept back for what is not known before training ends: the new META (its model id and
# metrics, the delta's own figures among them) is longer than the base's
MARGIN = 256


def binary_weights(model) -> list:
    """(name, latent weight parameter) of every binary layer, in order."""
    return [(n, p) for n, p in model.named_parameters() if _is_binary(n)]


def _is_binary(name: str) -> bool:
    return name.endswith(".weight") and name.startswith(("convs.", "dense.")) and ".bn." not in name


def _self_test_section(parts: dict) -> bytes:
    return b"GSEE" if b"GSEE" in parts else b"GOLD"


def _delta_bytes(base_bnn: bytes, payloads: list) -> int:
    """The size of a one-step delta from `base_bnn` to its own META and self-test with these
    layer payloads."""
    parts = delta._sections(base_bnn)
    tag = _self_test_section(parts)
    changed = bnn.assemble(parts[b"META"], payloads, tag, parts[tag])
    return len(delta.write_delta(base_bnn, [(changed, None)]))


def tier1_bytes(base_bnn: bytes) -> int:
    """The least a tier-1 delta of `base_bnn` can take: every threshold changed by at most one
    step of one byte, the input conv and the output layer sent again."""
    payloads = []
    for layer in bnn.read_bnn(base_bnn).layers:
        if layer.thresholds is not None:  # a changed threshold forces the layer's record
            t = bytearray(layer.thresholds)
            t[0] ^= 1
            layer = layer.replaced(thresholds=bytes(t))
        elif layer.kind == bnn.DENSE_OUT:
            layer = layer.replaced(scale=layer.scale * 1.5)
        payloads.append(bnn.layer_payload(layer))
    return _delta_bytes(base_bnn, payloads)


def tier1_of(base_bnn: bytes, model) -> int:
    """The size of the tier-1 delta from `base_bnn` to `model` (a trained BinaryNet): its
    thresholds, input conv and output layer on the base's binary weights, with the base's META."""
    payloads = []
    for a, b in zip(bnn.read_bnn(base_bnn).layers, deployed_layers(model), strict=True):
        if a.kind in (bnn.BCONV, bnn.BDENSE):
            b = b.replaced(weights=a.weights)
        payloads.append(bnn.layer_payload(b))
    return _delta_bytes(base_bnn, payloads)


def step_bytes(base_bnn: bytes) -> int:
    """What a second step adds besides its flips: its STEP record (META is not repeated)."""
    parts = delta._sections(base_bnn)
    framing = struct.calcsize(records.RECORD) + 4
    return framing + struct.calcsize(delta.STEP_HEAD) + len(parts[_self_test_section(parts)])


def check_budget(ckpt: dict, base, budget: int) -> int:
    """The least tier 1 can take for this model (with the margin); BinsortError, before any
    training, when the budget is smaller."""
    fixed = tier1_bytes(pack_model(ckpt, base)) + MARGIN
    if fixed > budget:
        raise BinsortError(
            "--delta-budget %d is below the %d bytes that thresholds, input conv and output "
            "layer take (tier 1) for this architecture" % (budget, fixed)
        )
    return fixed


def flip_records_bytes(base_layers: list, layers: list) -> int:
    """Bytes of the FLIPS records that turn the packed binary weights of `base_layers` into
    those of `layers` (protocol.bnn Layers), exactly as protocol.delta writes them."""
    total = 0
    for i, (a, b) in enumerate(zip(base_layers, layers, strict=True)):
        if a.kind in (bnn.BCONV, bnn.BDENSE) and a.weights != b.weights:
            op = [o for o in delta.layer_ops(a, b, i) if o[2] == delta.FLIPS]
            total += len(delta.record(b"LAYR", op[0]))
    return total


def keep_within_budget(model, base, budget: int, ckpt: dict, log=print) -> dict:
    """Put back the base model's binary weights except the most firmly flipped ones that fit
    `budget` bytes with tier 1; returns what was kept. `base` is the model the device runs (a
    BinaryNet of the same architecture). The flips' bytes are measured on the packed layers,
    as the delta will carry them."""
    base_bnn = pack_model(ckpt, base)
    fixed = tier1_of(base_bnn, model) + MARGIN  # as trained; its second phase moves it little
    second_step = step_bytes(base_bnn)  # the flips come as a step of their own
    base_layers = deployed_layers(base)
    new, old = dict(binary_weights(model)), dict(binary_weights(base))
    trained = {name: w.detach().clone() for name, w in new.items()}
    candidates = []  # (importance, layer name, flat index)
    for name, w1 in trained.items():
        w0 = old[name].detach()
        flipped = ((w1 >= 0) != (w0 >= 0)).flatten().nonzero().flatten()
        candidates += [(float(w1.flatten()[i].abs()), name, int(i)) for i in flipped]
    candidates.sort(reverse=True)

    def select(n: int) -> None:
        """The model's binary weights: the base's, but the n firmest flips."""
        keep = {}
        for _, name, i in candidates[:n]:
            keep.setdefault(name, []).append(i)
        with torch.no_grad():
            for name, w in new.items():
                flat = old[name].detach().flatten().clone()
                idx = torch.tensor(keep.get(name, []), dtype=torch.long)
                if len(idx):
                    flat[idx] = trained[name].flatten()[idx]
                w.copy_(flat.view_as(w))

    def cost(n: int) -> int:
        if n == 0:
            return 0
        select(n)
        return second_step + flip_records_bytes(base_layers, deployed_layers(model))

    if fixed > budget:
        log(
            "delta budget %d bytes: tier 1 alone takes %d as trained; no weight flips kept"
            % (budget, fixed - MARGIN)
        )
    lo, hi = 0, len(candidates) if fixed <= budget else 0  # the most flips whose bytes fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fixed + cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    size = fixed - MARGIN + cost(lo)
    select(lo)
    log(
        "delta budget %d bytes: tier 1 takes %d, %d of %d weight flips kept (%d bytes in all)"
        % (budget, fixed - MARGIN, lo, len(candidates), size)
    )
    return {
        "budget": budget,
        "tier1_bytes": fixed - MARGIN,
        "flips_found": len(candidates),
        "flips_kept": lo,
        "estimated_bytes": size,
    }


def freeze_binary_weights(model) -> None:
    """Binary weights stay as they are; BatchNorm, the input conv and the output layer learn."""
    for _, w in binary_weights(model):
        w.requires_grad_(False)


def freeze_norm_ratios(model) -> None:
    """Every BatchNorm's gamma and beta stay the base model's (its running statistics still
    learn): the packed NORM ratios beta/gamma are then the base's, and a delta need not carry
    them (about 0.8 KB for the default model) for the device to keep recalibrating (tier 0)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            for p in (m.weight, m.bias):
                p.requires_grad_(False)
