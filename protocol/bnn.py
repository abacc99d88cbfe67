"""The `.bnn` container: reader and writer (layout in docs/format.md, section ".bnn container").

A file is a 12-byte header, sections of (tag, length, payload, CRC32), and a final HASH section
holding the SHA-256 of every byte before it. Sections: META (UTF-8 JSON), one LAYR per layer in
execution order, the self-test inputs with their expected integer scores, HASH. The self-test
inputs are either stored whole (GOLD, format 1.0) or drawn from a seed by `seeded_input`
(GSEE, format 1.1: about 170 bytes instead of 18 KB for two 96x96 inputs).
The reader checks everything it is given and raises FormatError, never anything else, so a
corrupted or truncated file can never turn into a half-loaded model. Standard library only, in
the subset MicroPython runs.
"""

import binascii
import hashlib
import json
import struct

from protocol.errors import FormatError
from protocol.foreign import wrong_magic
from protocol.prng import mix32, stream_key

MAGIC = b"BSNN"
VERSION_MAJOR = 1
# 1.1 adds GSEE (seeded self-test inputs), 1.2 the layers' NORM, 1.3 int16 thresholds, 1.4
# max-pools wider than 2x2; all read
VERSION_MINOR = 4

CONV_U8 = 1  # real-weight (int8) convolution on 8-bit pixels: the first layer
BCONV = 2  # binary convolution, packed weights, integer thresholds
BDENSE = 3  # binary fully connected, packed weights, integer thresholds
DENSE_OUT = 4  # last layer: int16 weights on binary inputs, int32 bias, one float scale
KIND_NAMES = {CONV_U8: "conv_u8", BCONV: "bconv", BDENSE: "bdense", DENSE_OUT: "dense_out"}

_HEADER = "<4sHHI"  # magic, major, minor, section count
_SECTION = "<4sI"  # tag, payload length; payload; then u32 CRC32 of tag+length+payload
_LAYER = "<BBBBIIHHBB2x"  # kind, k, stride, pad, cin, cout, in_h, in_w, pool, flags
_GOLD = "<HHHH"  # count, height, width, classes
_GSEE = "<IHHHH"  # seed, count, height, width, classes
FLAG_NORM = 1  # a layer's flags: its BatchNorm ratios follow the flips (format 1.2)
FLAG_T16 = 2  # a layer's flags: its thresholds are stored as int16, not int32 (format 1.3)
_POOL_AT = 16  # offset of the pool byte in a layer's header
_FLAGS_AT = 17  # offset of the flags byte in a layer's header
_KIND_FLAGS = {DENSE_OUT: (0,), CONV_U8: (0, FLAG_NORM)}  # the flags each kind may have (else
# a binary layer's: NORM, int16 thresholds, or both)
NORM_KEEP = -128  # a NORM value: this channel's threshold is not re-estimated
GOLDEN_STREAM = 0x60D  # protocol.prng stream id of seeded self-test inputs
_MAX_SECTIONS = 4096


# a layer's geometry, in the order of its header (_LAYER) and of the native kernel's bs_layer
GEOMETRY = ("kind", "k", "stride", "pad", "cin", "cout", "in_h", "in_w", "pool")


class Layer:
    """One deployed layer. Weights, thresholds and flips stay as bytes in the file's layout.
    Build one with keywords, or from another's `geometry()`."""

    def __init__(
        self,
        kind,
        k,
        stride,
        pad,
        cin,
        cout,
        in_h,
        in_w,
        pool,
        weights,
        thresholds=None,
        flips=None,
        bias=None,
        scale=1.0,
        norm=None,
    ):
        self.kind = kind
        self.k = k
        self.stride = stride
        self.pad = pad
        self.cin = cin
        self.cout = cout
        self.in_h = in_h
        self.in_w = in_w
        self.pool = pool
        self.weights = weights
        self.thresholds = thresholds
        self.flips = flips
        self.bias = bias
        self.scale = scale
        # None, or f32 scale q then cout int8: each channel's BatchNorm beta/gamma over q
        # (NORM_KEEP: none), what re-estimating its threshold on the device needs
        self.norm = norm

    def geometry(self) -> dict:
        """{name: value} of the GEOMETRY fields."""
        return {name: getattr(self, name) for name in GEOMETRY}

    def replaced(self, **changes) -> "Layer":
        """A copy with some of weights, thresholds, flips, bias, scale and norm replaced."""
        fields = self.geometry()
        for name in ("weights", "thresholds", "flips", "bias", "scale", "norm"):
            fields[name] = changes.pop(name, getattr(self, name))
        if changes:
            raise TypeError("a layer's geometry is not replaced: %s" % ", ".join(changes))
        return Layer(**fields)

    @property
    def is_conv(self) -> bool:
        return self.kind in (CONV_U8, BCONV)

    def conv_out(self) -> "tuple[int, int]":
        """Spatial size after the convolution, before pooling."""
        return (
            (self.in_h + 2 * self.pad - self.k) // self.stride + 1,
            (self.in_w + 2 * self.pad - self.k) // self.stride + 1,
        )

    def out_shape(self) -> "tuple[int, int]":
        """Spatial size of the layer's output (after pooling); (1, 1) for dense layers."""
        if not self.is_conv:
            return (1, 1)
        h, w = self.conv_out()
        return (h // self.pool, w // self.pool)

    def out_bits(self) -> int:
        h, w = self.out_shape()
        return h * w * self.cout

    def weight_bytes(self) -> int:
        if self.kind == CONV_U8:
            return self.cout * self.k * self.k * self.cin
        if self.kind == BCONV:
            return self.cout * self.k * self.k * self.cin // 8
        if self.kind == BDENSE:
            return self.cout * self.cin // 8
        return self.cout * self.cin * 2


def dense_geometry(kind: int, cin: int, cout: int) -> dict:
    """The geometry of a fully connected layer: a 1x1 'conv' on a 1x1 map, no padding or pool."""
    return dict(kind=kind, k=1, stride=1, pad=0, cin=cin, cout=cout, in_h=1, in_w=1, pool=1)


def seeded_input(seed: int, index: int, height: int, width: int) -> bytes:
    """Self-test input `index` drawn from `seed` (docs/format.md "Seeded self-test inputs"):
    a brightness and contrast of its own, 8x8-pixel blocks of coarse noise and fine noise on
    each pixel, from protocol.prng's mix32, so every machine draws the same bytes."""
    key = stream_key(seed, index, GOLDEN_STREAM)
    head = mix32(key ^ 0xFFFFFFFF)
    base = 40 + (head & 0xFF) * 176 // 255
    contrast = 32 + ((head >> 8) & 0x7F)
    blocks_w = (width + 7) // 8
    out = bytearray(height * width)
    for y in range(height):
        coarse = [
            (mix32(key ^ (0x80000000 | ((y >> 3) * blocks_w + b))) & 0xFF) - 128
            for b in range(blocks_w)
        ]
        row = y * width
        for x in range(width):
            v = base + (coarse[x >> 3] * contrast) // 128 + (mix32(key ^ (row + x)) & 0x3F) - 32
            out[row + x] = 0 if v < 0 else 255 if v > 255 else v
    return bytes(out)


class BnnModel:
    """A parsed `.bnn`: metadata dict, layers, golden (input bytes, expected scores) pairs,
    and `golden_seed`, the seed they were drawn from (None when they are stored whole)."""

    def __init__(self, meta, layers, golden, sha256, golden_seed=None):
        self.meta = meta
        self.layers = layers
        self.golden = golden
        self.sha256 = sha256
        self.golden_seed = golden_seed

    @property
    def labels(self) -> list:
        return self.meta["labels"]

    @property
    def input_shape(self) -> "tuple[int, int]":
        return (self.meta["input"]["height"], self.meta["input"]["width"])


def section(tag: bytes, payload: bytes) -> bytes:
    head = struct.pack(_SECTION, tag, len(payload))
    return head + payload + struct.pack("<I", binascii.crc32(head + payload) & 0xFFFFFFFF)


def short_thresholds(layer: Layer):
    """A binary layer's thresholds as int16 bytes when they fit once each is clamped to the
    range that decides the same bits (its accumulator lies in [-n, n], n the patch size, so
    any T <= -n acts as -n and any T > n as n + 1); None when they do not fit, and for the
    8-bit input layer, whose accumulator reaches 255 * sum|w| (its thresholds stay int32)."""
    if layer.kind not in (BCONV, BDENSE):
        return None
    n = layer.k * layer.k * layer.cin
    short = []
    for t in struct.unpack("<%di" % layer.cout, layer.thresholds):
        t = -n if t < -n else n + 1 if t > n + 1 else t
        if not -32768 <= t <= 32767:
            return None
        short.append(t)
    return struct.pack("<%dh" % layer.cout, *short)


def layer_payload(layer: Layer, narrow: bool = True) -> bytes:
    """A LAYR payload. A binary layer's thresholds are written as int16 (flag FLAG_T16, format
    1.3) where they fit and `narrow` is set, else as int32 exactly as given."""
    flags = FLAG_NORM if layer.norm is not None else 0
    if layer.kind == DENSE_OUT:
        head = struct.pack(_LAYER, *[getattr(layer, name) for name in GEOMETRY], flags)
        return head + bytes(layer.weights) + bytes(layer.bias) + struct.pack("<f", layer.scale)
    thresholds = short_thresholds(layer) if narrow else None
    if thresholds is None:
        thresholds = bytes(layer.thresholds)
    else:
        flags |= FLAG_T16
    head = struct.pack(_LAYER, *[getattr(layer, name) for name in GEOMETRY], flags)
    body = head + bytes(layer.weights) + thresholds + bytes(layer.flips)
    return body + bytes(layer.norm) if layer.norm is not None else body


def norm_ratios(layer: Layer) -> list:
    """A layer's BatchNorm ratios beta/gamma per channel (None where NORM_KEEP), or None when
    it carries no NORM."""
    if layer.norm is None:
        return None
    q = struct.unpack_from("<f", layer.norm)[0]
    values = struct.unpack_from("<%db" % layer.cout, layer.norm, 4)
    return [None if v == NORM_KEEP else v * q for v in values]


def pack_norm(ratios: list) -> bytes:
    """The NORM bytes of per-channel ratios beta/gamma (None or not finite: not re-estimated),
    quantised to int8 with one scale for the layer."""
    ratios = [r if r is not None and r == r and abs(r) != float("inf") else None for r in ratios]
    finite = [abs(r) for r in ratios if r is not None]
    q = max(finite) / 127 if finite and max(finite) > 0 else 1.0
    q = struct.unpack("<f", struct.pack("<f", q))[0]  # the scale as stored
    values = [NORM_KEEP if r is None else max(-127, min(127, int(round(r / q)))) for r in ratios]
    return struct.pack("<f", q) + struct.pack("<%db" % len(values), *values)


def write_bnn(meta: dict, layers: list, golden: list, golden_seed=None, narrow=True) -> bytes:
    """Serialise a model. `golden` is a list of (input image bytes, list of int scores); with
    `golden_seed` the images are seeded_input(golden_seed, i) and only the seed and the scores
    are written (GSEE, format 1.1), else the images are stored whole (GOLD, format 1.0).
    Thresholds that fit go in as int16 (format 1.3) unless `narrow` is false."""
    h, w = meta["input"]["height"], meta["input"]["width"]
    classes = len(meta["labels"])
    if golden_seed is None:
        gold = [struct.pack(_GOLD, len(golden), h, w, classes)]
        for image, scores in golden:
            gold.append(bytes(image))
            gold.append(struct.pack("<%dq" % len(scores), *scores))
        tag = b"GOLD"
    else:
        gold = [struct.pack(_GSEE, golden_seed, len(golden), h, w, classes)]
        for i, (image, scores) in enumerate(golden):
            if bytes(image) != seeded_input(golden_seed, i, h, w):
                raise ValueError("golden input %d is not the one seed %d draws" % (i, golden_seed))
            gold.append(struct.pack("<%dq" % len(scores), *scores))
        tag = b"GSEE"
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    payloads = [layer_payload(layer, narrow) for layer in layers]
    return assemble(meta_bytes, payloads, tag, b"".join(gold))


def assemble(meta_bytes: bytes, layer_payloads: list, gold_tag: bytes, gold_payload: bytes):
    """A `.bnn` from its parts as they are stored: META's JSON bytes, each LAYR payload, and
    the self-test section (GOLD, format 1.0, or GSEE, 1.1). write_bnn and a delta's apply
    (protocol.delta) both end here, so the same parts always make the same bytes."""
    sections = [section(b"META", meta_bytes)]
    sections.extend(section(b"LAYR", payload) for payload in layer_payloads)
    sections.append(section(gold_tag, gold_payload))
    minor = 1 if gold_tag == b"GSEE" else 0
    if any(p[_FLAGS_AT] & FLAG_NORM for p in layer_payloads):
        minor = 2
    if any(p[_FLAGS_AT] & FLAG_T16 for p in layer_payloads):
        minor = 3
    if any(p[_POOL_AT] > 2 for p in layer_payloads):
        minor = 4
    body = struct.pack(_HEADER, MAGIC, VERSION_MAJOR, minor, len(sections) + 1)
    body += b"".join(sections)
    return body + section(b"HASH", hashlib.sha256(body).digest())


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise FormatError("not a valid .bnn model: " + what)


# What a device gives one model. A `.bnn` carries its weights, so its size bounds them; a
# `.pranc` stream regenerates them, and any model's activations grow with its geometry, not
# its file: a few hundred bytes could otherwise ask for gigabytes.
MAX_WEIGHT_BYTES = 32 << 20  # packed weights of all layers
MAX_IMAGE_WORK = 8 << 20  # bytes of the largest layer's working set for one image
# the ranges of the header fields (_LAYER)
_FIELD_MAX = {"kind": 255, "k": 255, "stride": 255, "pad": 255, "pool": 255}
_FIELD_MAX.update({"cin": 1 << 24, "cout": 1 << 24, "in_h": 65535, "in_w": 65535})


def check_geometry(layer: Layer, index: int) -> None:
    """The shape rules of every layer: a known kind, fields in their header's ranges,
    non-empty, sane convolution geometry."""
    for name in GEOMETRY:
        v = getattr(layer, name)
        _check(
            isinstance(v, int) and 0 <= v <= _FIELD_MAX[name],
            "layer %d has %s out of range" % (index, name),
        )
    _check(layer.kind in KIND_NAMES, "layer %d has unknown kind %d" % (index, layer.kind))
    _check(layer.cin > 0 and layer.cout > 0, "layer %d has an empty shape" % index)
    if layer.is_conv:
        _check(
            layer.k > 0 and layer.stride > 0 and layer.pad < layer.k and layer.pool >= 1,
            "layer %d has bad convolution geometry" % index,
        )
        oh, ow = layer.out_shape()
        _check(oh > 0 and ow > 0, "layer %d has an empty output" % index)
    else:
        _check(
            (layer.k, layer.stride, layer.pad, layer.pool, layer.in_h, layer.in_w)
            == (1, 1, 0, 1, 1, 1),
            "layer %d is dense but carries convolution geometry" % index,
        )
    if layer.kind in (BCONV, BDENSE):
        _check(
            layer.cin % 8 == 0,
            "layer %d has %d binary inputs, not a multiple of 8" % (index, layer.cin),
        )


def _parse_layer(payload: bytes, index: int) -> Layer:
    n = struct.calcsize(_LAYER)
    _check(len(payload) >= n, "layer %d header truncated" % index)
    fields = struct.unpack_from(_LAYER, payload)
    flags = fields[-1]
    layer = Layer(weights=b"", **{name: fields[i] for i, name in enumerate(GEOMETRY)})
    kind, cout = layer.kind, layer.cout
    _check(
        flags in _KIND_FLAGS.get(kind, (0, FLAG_NORM, FLAG_T16, FLAG_NORM | FLAG_T16)),
        "layer %d has unsupported flags 0x%02x" % (index, flags),
    )
    check_geometry(layer, index)
    wb = layer.weight_bytes()
    tail = 4 if kind == DENSE_OUT else (cout + 7) // 8  # output scale, or packed flips
    norm = 4 + cout if flags & FLAG_NORM else 0
    width = 2 if flags & FLAG_T16 else 4  # bytes of a threshold (int32 bias for dense_out)
    expect = n + wb + width * cout + tail + norm
    _check(
        len(payload) == expect, "layer %d is %d bytes, expected %d" % (index, len(payload), expect)
    )
    mv = memoryview(payload)
    layer.weights = bytes(mv[n : n + wb])
    rest = n + wb
    if kind == DENSE_OUT:
        layer.bias = bytes(mv[rest : rest + 4 * cout])
        layer.scale = struct.unpack_from("<f", payload, rest + 4 * cout)[0]
        _check(layer.scale == layer.scale and layer.scale > 0, "output scale is not positive")
    else:
        raw = bytes(mv[rest : rest + width * cout])
        if width == 2:  # held as int32, whatever the file stores
            raw = struct.pack("<%di" % cout, *struct.unpack("<%dh" % cout, raw))
        layer.thresholds = raw
        layer.flips = bytes(mv[rest + width * cout : len(payload) - norm])
        if norm:
            layer.norm = bytes(mv[len(payload) - norm :])
            q = struct.unpack_from("<f", layer.norm)[0]
            _check(q == q and 0 < q < float("inf"), "layer %d: NORM scale is not positive" % index)
    return layer


def check_meta(meta) -> None:
    _check(isinstance(meta, dict), "META is not a JSON object")
    labels = meta.get("labels")
    _check(
        isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels),
        "META has no list of labels",
    )
    inp = meta.get("input")
    _check(isinstance(inp, dict), "META has no input description")
    for key in ("height", "width"):
        v = inp.get(key)
        _check(isinstance(v, int) and 0 < v <= 4096, "META input %s is invalid" % key)


def check_chain(meta: dict, layers: list) -> None:
    _check(len(layers) >= 2, "a model needs at least an input and an output layer")
    first, last = layers[0], layers[-1]
    _check(first.kind == CONV_U8 and first.cin == 1, "the first layer must read 8-bit grey pixels")
    _check(
        (first.in_h, first.in_w) == (meta["input"]["height"], meta["input"]["width"]),
        "the first layer's input size differs from META",
    )
    _check(last.kind == DENSE_OUT, "the last layer must be the output layer")
    _check(last.cout == len(meta["labels"]), "the output layer's width differs from the labels")
    for i in range(1, len(layers)):
        prev, layer = layers[i - 1], layers[i]
        _check(layer.kind != CONV_U8 and prev.kind != DENSE_OUT, "layer %d is out of place" % i)
        if layer.kind == BCONV:
            _check(
                prev.is_conv
                and (layer.in_h, layer.in_w) == prev.out_shape()
                and layer.cin == prev.cout,
                "layer %d does not fit its input" % i,
            )
        else:
            _check(layer.cin == prev.out_bits(), "layer %d does not fit its input" % i)
    work = max(image_work(layer) for layer in layers)
    _check(
        work <= MAX_IMAGE_WORK,
        "a layer needs %d MiB for one image, over the %d MiB a device gives a model"
        % (work >> 20, MAX_IMAGE_WORK >> 20),
    )
    weights = sum(layer.weight_bytes() for layer in layers)
    _check(
        weights <= MAX_WEIGHT_BYTES,
        "the layers hold %d MiB of weights, over the %d MiB a device gives a model"
        % (weights >> 20, MAX_WEIGHT_BYTES >> 20),
    )


def image_work(layer: Layer) -> int:
    """Bytes one image needs in this layer at the most, counted as the engines hold it: the
    patches (4 bytes a value for the 8-bit input layer, a bit a value for binary layers) and
    the accumulators (4 bytes each)."""
    if not layer.is_conv:
        return layer.cin + 4 * layer.cout
    h, w = layer.conv_out()
    per_value = 4 if layer.kind == CONV_U8 else 1 / 8
    return int(h * w * (layer.k * layer.k * layer.cin * per_value + 4 * layer.cout))


def _parse_gsee(payload: bytes, meta: dict) -> "tuple[list, int]":
    n = struct.calcsize(_GSEE)
    _check(len(payload) >= n, "GSEE truncated")
    seed, count, h, w, classes = struct.unpack_from(_GSEE, payload)
    _check((h, w) == (meta["input"]["height"], meta["input"]["width"]), "GSEE input size differs")
    _check(classes == len(meta["labels"]), "GSEE class count differs")
    _check(count >= 1, "GSEE holds no inputs, so nothing can show the model computes as packed")
    _check(count <= 16, "GSEE asks for %d self-test inputs (at most 16)" % count)
    _check(len(payload) == n + count * 8 * classes, "GSEE has the wrong length")
    golden = []
    for i in range(count):
        scores = list(struct.unpack_from("<%dq" % classes, payload, n + i * 8 * classes))
        golden.append((seeded_input(seed, i, h, w), scores))
    return golden, seed


def _parse_gold(payload: bytes, meta: dict) -> list:
    n = struct.calcsize(_GOLD)
    _check(len(payload) >= n, "GOLD truncated")
    count, h, w, classes = struct.unpack_from(_GOLD, payload)
    _check((h, w) == (meta["input"]["height"], meta["input"]["width"]), "GOLD input size differs")
    _check(classes == len(meta["labels"]), "GOLD class count differs")
    _check(count >= 1, "GOLD holds no inputs, so nothing can show the model computes as packed")
    entry = h * w + 8 * classes
    _check(len(payload) == n + count * entry, "GOLD has the wrong length")
    golden = []
    for i in range(count):
        at = n + i * entry
        image = bytes(payload[at : at + h * w])
        scores = list(struct.unpack_from("<%dq" % classes, payload, at + h * w))
        golden.append((image, scores))
    return golden


def read_bnn(data: bytes) -> BnnModel:
    """Parse and verify a whole `.bnn`; raises FormatError for anything that is not one."""
    data = bytes(data)
    hn = struct.calcsize(_HEADER)
    _check(len(data) >= hn, "file is %d bytes, too short for a header" % len(data))
    magic, major, minor, count = struct.unpack_from(_HEADER, data)
    _check(magic == MAGIC, wrong_magic(data[:64]))
    if major != VERSION_MAJOR:
        raise FormatError(
            "unsupported .bnn format version %d.%d (this binsort reads %d.x); "
            "upgrade binsort" % (major, minor, VERSION_MAJOR)
        )
    _check(0 < count <= _MAX_SECTIONS, "implausible section count %d" % count)
    sn = struct.calcsize(_SECTION)
    at = hn
    sections = []
    for i in range(count):
        _check(at + sn <= len(data), "truncated in section %d of %d" % (i + 1, count))
        tag, length = struct.unpack_from(_SECTION, data, at)
        end = at + sn + length
        _check(end + 4 <= len(data), "truncated in section %d of %d" % (i + 1, count))
        crc = struct.unpack_from("<I", data, end)[0]
        _check(
            binascii.crc32(data[at:end]) & 0xFFFFFFFF == crc,
            "CRC mismatch in section %d (%r)" % (i + 1, tag),
        )
        sections.append((tag, at, data[at + sn : end]))
        at = end + 4
    _check(at == len(data), "%d stray bytes after the last section" % (len(data) - at))
    tag, hash_at, digest = sections[-1]
    _check(tag == b"HASH" and len(digest) == 32, "the last section is not the SHA-256")
    _check(hashlib.sha256(data[:hash_at]).digest() == digest, "SHA-256 mismatch")
    try:
        return _read_content(sections)
    except FormatError as e:
        if minor <= VERSION_MINOR:
            raise
        # Whole as written (its hash holds) but from a newer writer: whatever this reader
        # cannot take in it is most likely what the newer minor version added, so say so.
        raise FormatError(
            "%s (the file is .bnn format %d.%d, this binsort reads up to %d.%d: upgrade binsort)"
            % (e, major, minor, VERSION_MAJOR, VERSION_MINOR)
        ) from None


def _read_content(sections: list) -> BnnModel:
    """The model in a `.bnn`'s sections, once the file is known whole (its CRCs and hash)."""
    digest = sections[-1][2]
    tags = [s[0] for s in sections]
    _check(tags[0] == b"META", "the first section is not META")
    gold_tag = tags[-2]
    _check(
        gold_tag in (b"GOLD", b"GSEE") and tags.count(gold_tag) == 1,
        "the self-test inputs (GOLD or GSEE) must come just before HASH",
    )
    _check(all(t == b"LAYR" for t in tags[1:-2]), "unknown sections between META and GOLD")
    try:
        meta = json.loads(sections[0][2].decode("utf-8"))
    except (ValueError, UnicodeError, RuntimeError, MemoryError):  # RuntimeError: nested too deep
        raise FormatError("not a valid .bnn model: META is not UTF-8 JSON") from None
    check_meta(meta)
    layers = [_parse_layer(s[2], i) for i, s in enumerate(sections[1:-2])]
    check_chain(meta, layers)
    if gold_tag == b"GSEE":
        golden, seed = _parse_gsee(sections[-2][2], meta)
    else:
        golden, seed = _parse_gold(sections[-2][2], meta), None
    return BnnModel(meta, layers, golden, digest, seed)


def read_model_file(path: str, parse):
    """parse(the file's bytes), with a clean error when the file cannot be read and the path in
    front of any FormatError the parser raises."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FormatError("cannot read model %s: %s" % (path, e)) from None
    try:
        return parse(data)
    except FormatError as e:
        raise FormatError("%s: %s" % (path, e)) from None


def read_bnn_file(path: str) -> BnnModel:
    """read_bnn on a file, with a clean error when the file cannot be read."""
    return read_model_file(path, read_bnn)
