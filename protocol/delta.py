"""The `.bsd` delta: an update to a model a device already runs (docs/format.md, "`.bsd` delta").

A delta names the SHA-256 of the `.bnn` file it applies to and carries only what changed: new
thresholds for a layer, a layer replaced whole (the real-valued input conv and output layer),
and flips of single weight bits in binary layers, as Rice-coded gaps between their positions.
Its records come in steps; each step ends with a STEP record holding the self-test inputs of
the model made so far and the SHA-256 of that model's `.bnn`, so every prefix that ends on a
step is an update, and applying it either makes exactly the `.bnn` the host packed or fails.
Tier 1 (thresholds, input conv, output layer) is the first step; weight flips follow.

`apply_delta(base_bytes, delta_bytes)` returns the new `.bnn` bytes or raises FormatError.
Standard library only, in the subset MicroPython runs.
"""

import binascii
import hashlib
import struct

from protocol import bnn
from protocol.errors import FormatError
from protocol.records import HEADER, read_records, record

MAGIC = b"BSDL"
VERSION_MAJOR = 1
VERSION_MINOR = 0
OP_HEAD = "<HBB"  # layer index, operation, Rice parameter (flips only, else 0)
STEP_HEAD = "<HI32s4s"  # host accuracy in 1/10000, .bnn size, its SHA-256, self-test section tag
# what a LAYR record does to its layer
WHOLE, THRESHOLDS, FLIPS, THRESHOLD_STEPS, NORM = 1, 2, 3, 4, 5
NOT_MEASURED = 0xFFFF
MAX_RECORD = 40 << 20


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise FormatError("not a valid .bsd delta: " + what)


# -- Rice coding of sorted bit positions ------------------------------------------------------


def rice_encode(positions: list, k: int) -> bytes:
    """Gaps between sorted, distinct positions (the first from -1), each as a unary quotient
    (q ones, a zero) then k remainder bits, least significant bit first in each byte."""
    out, acc, nbits, prev = bytearray(), 0, 0, -1
    for p in positions:
        gap = p - prev - 1
        if gap < 0:
            raise ValueError("positions must be sorted and distinct")
        prev = p
        q, r = gap >> k, gap & ((1 << k) - 1)
        for bit in [1] * q + [0] + [(r >> i) & 1 for i in range(k)]:
            acc |= bit << nbits
            nbits += 1
            if nbits == 8:
                out.append(acc)
                acc, nbits = 0, 0
    if nbits:
        out.append(acc)
    return bytes(out)


def rice_decode(data: bytes, count: int, k: int, limit: int) -> list:
    """The `count` positions rice_encode wrote; FormatError past the data or at `limit`."""
    positions, prev, at, total = [], -1, 0, len(data) * 8
    for _ in range(count):
        q = 0
        while True:
            _check(at < total, "flip positions run past their record")
            bit = (data[at >> 3] >> (at & 7)) & 1
            at += 1
            if not bit:
                break
            q += 1
            _check(q <= limit, "a flip gap past the end of its layer")
        _check(at + k <= total, "flip positions run past their record")
        r = 0
        for i in range(k):
            r |= ((data[(at + i) >> 3] >> ((at + i) & 7)) & 1) << i
        at += k
        prev = prev + (q << k) + r + 1
        _check(prev < limit, "a flip at bit %d of a %d-bit layer" % (prev, limit))
        positions.append(prev)
    _check((total - at) < 8, "%d stray bits after the flip positions" % (total - at))
    return positions


def rice_parameter(count: int, bits: int) -> int:
    """The Rice parameter for `count` flips spread over `bits` positions: about log2 of the
    mean gap, which codes uniformly spread positions in about k + 2 bits each."""
    if count <= 0:
        return 0
    mean = bits // count
    k = 0
    while (2 << k) <= mean:
        k += 1
    return min(k, 30)


# -- threshold steps: zigzag varints -----------------------------------------------------------


def threshold_steps(old: bytes, new: bytes) -> bytes:
    """Each i32 threshold's change, new - old, as a zigzag LEB128 varint: one byte for a change
    within +-63, where a retrained threshold usually lands."""
    n = len(old) // 4
    a, b = struct.unpack("<%di" % n, old), struct.unpack("<%di" % n, new)
    out = bytearray()
    for i in range(n):
        d = b[i] - a[i]
        z = (d << 1) if d >= 0 else ((-d) << 1) - 1
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
    return bytes(out)


def apply_threshold_steps(old: bytes, data: bytes, index: int) -> "tuple[bytes, int]":
    """(new i32 thresholds, bytes of `data` used) from threshold_steps' output."""
    n = len(old) // 4
    a = struct.unpack("<%di" % n, old)
    out, at = [], 0
    for i in range(n):
        z, shift = 0, 0
        while True:
            _check(at < len(data), "layer %d: threshold steps end early" % index)
            byte = data[at]
            at += 1
            z |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            _check(shift < 40, "layer %d: a threshold step too long" % index)
        t = a[i] + ((z >> 1) if not z & 1 else -((z + 1) >> 1))
        _check(-(1 << 31) <= t < (1 << 31), "layer %d: a threshold out of range" % index)
        out.append(t)
    return struct.pack("<%di" % n, *out), at


# -- writing ----------------------------------------------------------------------------------


def layer_ops(old, new, index: int) -> list:
    """The LAYR record payloads that turn layer `old` into layer `new` (both protocol.bnn
    Layers of the same geometry): nothing if equal; the whole layer for the real-valued input
    and output layers; thresholds and weight-bit flips for binary layers."""
    if old.geometry() != new.geometry():
        raise ValueError("layer %d changed its geometry: a delta cannot carry that" % index)
    if bnn.layer_payload(old) == bnn.layer_payload(new):
        return []
    if old.kind in (bnn.CONV_U8, bnn.DENSE_OUT):
        return [struct.pack(OP_HEAD, index, WHOLE, 0) + bnn.layer_payload(new)]
    ops = []
    if (old.thresholds, old.flips) != (new.thresholds, new.flips):
        # new thresholds whole, or as varint steps from the old ones, whichever is shorter
        whole = new.thresholds + new.flips
        steps = threshold_steps(old.thresholds, new.thresholds) + new.flips
        op, body = (THRESHOLD_STEPS, steps) if len(steps) < len(whole) else (THRESHOLDS, whole)
        ops.append(struct.pack(OP_HEAD, index, op, 0) + body)
    if old.weights != new.weights:
        a, b = old.weights, new.weights
        positions = [
            i * 8 + j
            for i in range(len(a))
            if a[i] != b[i]
            for j in range(8)
            if (a[i] ^ b[i]) >> j & 1
        ]
        k = rice_parameter(len(positions), len(old.weights) * 8)
        head = struct.pack(OP_HEAD, index, FLIPS, k) + struct.pack("<I", len(positions))
        ops.append(head + rice_encode(positions, k))
    if old.norm != new.norm:  # the BatchNorm ratios (format 1.2), or none
        ops.append(struct.pack(OP_HEAD, index, NORM, 0) + (new.norm or b""))
    return ops


def write_delta(base: bytes, steps: list) -> bytes:
    """A delta from the `.bnn` bytes `base` through `steps`, a list of (.bnn bytes, host
    accuracy or None): each step's model must differ from the one before only in what a delta
    carries (same layers and geometry; META and self-test inputs may change)."""
    old = bnn.read_bnn(base)
    body = struct.pack(HEADER, MAGIC, VERSION_MAJOR, VERSION_MINOR)
    body += record(b"BASE", hashlib.sha256(base).digest())
    meta = None
    for data, accuracy in steps:
        new = bnn.read_bnn(data)
        if len(new.layers) != len(old.layers):
            n_old, n_new = len(old.layers), len(new.layers)
            raise ValueError("the models have %d and %d layers" % (n_old, n_new))
        parts = _sections(data)
        if parts[b"META"] != meta:  # a step whose META is the last one's does not repeat it
            meta = parts[b"META"]
            body += record(b"META", meta)
        for i in range(len(new.layers)):  # MicroPython's zip has no strict
            for op in layer_ops(old.layers[i], new.layers[i], i):
                body += record(b"LAYR", op)
        tag = b"GSEE" if b"GSEE" in parts else b"GOLD"
        acc = NOT_MEASURED if accuracy is None else int(round(accuracy * 10000))
        head = struct.pack(STEP_HEAD, acc, len(data), hashlib.sha256(data).digest(), tag)
        body += record(b"STEP", head + parts[tag])
        old = new
    return body + record(b"DONE", hashlib.sha256(body).digest())


def _sections(data: bytes) -> dict:
    """{tag: payload} of a valid `.bnn`'s META and self-test sections."""
    out, at = {}, struct.calcsize(bnn._HEADER)
    sn = struct.calcsize(bnn._SECTION)
    while at < len(data):
        tag, length = struct.unpack_from(bnn._SECTION, data, at)
        out[bytes(tag)] = data[at + sn : at + sn + length]
        at += sn + length + 4
    return out


# -- reading and applying ---------------------------------------------------------------------


def base_sha256(data: bytes) -> str:
    """The hex SHA-256 of the `.bnn` a delta (or its first record) applies to."""
    records = _records(data)
    _check(records and records[0][0] == b"BASE", "the first record is not BASE")
    payload = records[0][1]
    _check(len(payload) == 32, "BASE is not a SHA-256")
    return binascii.hexlify(payload).decode()


def _records(data: bytes) -> list:
    """[(tag, payload, end, start)] of every record of a delta or of a prefix ending on one."""
    return read_records(data, MAGIC, VERSION_MAJOR, ".bsd delta", MAX_RECORD)


def read_steps(data: bytes) -> "tuple[dict, bool]":
    """({end offset of each STEP record: host accuracy or None}, whether DONE ends it) of a
    delta, from its records (CRCs checked; the steps are not applied: that needs the base)."""
    steps, done = {}, False
    for tag, payload, end, _ in _records(data):
        if tag == b"STEP":
            _check(len(payload) >= struct.calcsize(STEP_HEAD), "a short STEP record")
            acc = struct.unpack_from(STEP_HEAD, payload)[0]
            steps[end] = None if acc == NOT_MEASURED else acc / 10000
        done = tag == b"DONE"
    return steps, done


class Update:
    """What applying a delta (or a prefix of it) made: the new `.bnn` bytes, how many steps
    it applied, the host's accuracy for the last of them, and whether DONE was seen."""

    def __init__(self, data: bytes, step: int, accuracy, done: bool):
        self.data, self.step, self.accuracy, self.done = data, step, accuracy, done


def apply_delta(base: bytes, data: bytes) -> Update:
    """Apply a whole delta, or a prefix of it that ends on a STEP, to the `.bnn` bytes `base`.
    FormatError if the delta is malformed, is for another model, or does not make exactly the
    `.bnn` its step names (so a device never runs a model the host did not pack)."""
    data = bytes(data)
    records = _records(data)
    _check(records and records[0][0] == b"BASE", "the first record is not BASE")
    if hashlib.sha256(base).digest() != records[0][1]:
        raise FormatError(
            "this delta applies to model %s, not to %s"
            % (
                base_sha256(data)[:16],
                binascii.hexlify(hashlib.sha256(base).digest())[:16].decode(),
            )
        )
    model = bnn.read_bnn(base)
    payloads = [bnn.layer_payload(layer) for layer in model.layers]
    layers = list(model.layers)
    meta, done, made, step, accuracy, open_step = None, False, None, 0, None, False
    for tag, payload, _, at in records[1:]:
        if tag == b"META":
            meta, open_step = payload, True
        elif tag == b"LAYR":
            _apply_op(layers, payloads, payload)
            open_step = True
        elif tag == b"STEP":
            _check(meta is not None, "a STEP without META")
            _check(len(payload) >= struct.calcsize(STEP_HEAD), "a short STEP record")
            acc, size, digest, gold_tag = struct.unpack_from(STEP_HEAD, payload)
            _check(gold_tag in (b"GOLD", b"GSEE"), "unknown self-test section %r" % (gold_tag,))
            gold = payload[struct.calcsize(STEP_HEAD) :]
            made = bnn.assemble(meta, payloads, gold_tag, gold)
            if hashlib.sha256(made).digest() != digest:  # a host before .bnn 1.3: int32 thresholds
                wide = [bnn.layer_payload(layer, narrow=False) for layer in layers]
                made = bnn.assemble(meta, wide, gold_tag, gold)
            _check(
                len(made) == size and hashlib.sha256(made).digest() == digest,
                "step %d does not make the model the host packed" % (step + 1),
            )
            step += 1
            accuracy = None if acc == NOT_MEASURED else acc / 10000
            open_step = False
        elif tag == b"DONE":
            _check(not open_step and made is not None, "DONE inside a step")
            _check(
                len(payload) == 32 and hashlib.sha256(data[:at]).digest() == payload,
                "SHA-256 mismatch",
            )
            done = True
        else:
            _check(False, "unknown record %r" % (tag,))
    _check(made is not None and not open_step, "it ends inside a step")
    return Update(made, step, accuracy, done)


def _apply_op(layers: list, payloads: list, payload: bytes) -> None:
    hn = struct.calcsize(OP_HEAD)
    _check(len(payload) >= hn, "a LAYR record of %d bytes" % len(payload))
    index, op, k = struct.unpack_from(OP_HEAD, payload)
    _check(index < len(layers), "layer %d of %d" % (index, len(layers)))
    layer, body = layers[index], payload[hn:]
    if op == WHOLE:
        _check(layer.kind in (bnn.CONV_U8, bnn.DENSE_OUT), "layer %d is binary" % index)
        new = bnn._parse_layer(body, index)
        _check(new.geometry() == layer.geometry(), "layer %d changes its geometry" % index)
    elif op == THRESHOLDS:
        _check(layer.kind in (bnn.BCONV, bnn.BDENSE, bnn.CONV_U8), "layer %d has none" % index)
        tn, fn = len(layer.thresholds), len(layer.flips)
        _check(len(body) == tn + fn, "layer %d: thresholds of %d bytes" % (index, len(body)))
        new = layer.replaced(thresholds=body[:tn], flips=body[tn:])
    elif op == THRESHOLD_STEPS:
        _check(layer.kind in (bnn.BCONV, bnn.BDENSE, bnn.CONV_U8), "layer %d has none" % index)
        thresholds, used = apply_threshold_steps(layer.thresholds, body, index)
        flips = body[used:]
        _check(len(flips) == len(layer.flips), "layer %d: flips of %d bytes" % (index, len(flips)))
        new = layer.replaced(thresholds=thresholds, flips=flips)
    elif op == FLIPS:
        _check(layer.kind in (bnn.BCONV, bnn.BDENSE), "layer %d has no weight bits" % index)
        _check(len(body) >= 4, "layer %d: no flip count" % index)
        count = struct.unpack_from("<I", body)[0]
        bits = len(layer.weights) * 8
        _check(count <= bits, "%d flips in a %d-bit layer" % (count, bits))
        weights = bytearray(layer.weights)
        for p in rice_decode(body[4:], count, k, bits):
            weights[p >> 3] ^= 1 << (p & 7)
        new = layer.replaced(weights=bytes(weights))
    elif op == NORM:
        _check(layer.kind in (bnn.BCONV, bnn.BDENSE), "layer %d: NORM goes with WHOLE" % index)
        _check(len(body) in (0, 4 + layer.cout), "layer %d: NORM of %d bytes" % (index, len(body)))
        new = layer.replaced(norm=body or None)
        new = bnn._parse_layer(bnn.layer_payload(new), index)  # checks the NORM scale
    else:
        _check(False, "unknown layer operation %d" % op)
    layers[index] = new
    payloads[index] = bnn.layer_payload(new)
