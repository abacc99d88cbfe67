"""The `.pranc` stream: seed + int16 alphas, most important first (docs/format.md, ".pranc stream").

A stream is an 8-byte header then records framed like `.bnn` sections (tag, length, payload,
CRC32): HEAD (JSON: architecture, labels, seed, hash, basis, per-layer geometry and alpha
counts), FIXD (what every prefix needs: per-layer scales, thresholds, BatchNorm of the first
layer, biases), then one ACHK per chunk in transmission order, each carrying the next run of
every layer's alphas, the accuracy the host measured for the model made of the stream so far and
a CRC32 of that model's packed layers; then DONE with the SHA-256 of everything before it.
Any prefix that ends on a record boundary after FIXD is a valid model.

`StreamReader` parses incrementally, so a receiver can act on every chunk as it arrives; it
raises FormatError for anything malformed and leaves what it accepted before untouched.
Standard library only, in the subset MicroPython runs.
"""

import binascii
import hashlib
import json
import math
import struct

from protocol import bnn
from protocol.errors import FormatError
from protocol.foreign import wrong_magic
from protocol.prng import HASH_ID, HASH_VERSION

MAGIC = b"BSPR"
VERSION_MAJOR = 1
VERSION_MINOR = 0
HEADER = "<4sHH"  # magic, major, minor
RECORD = "<4sI"  # tag, payload length; payload; u32 CRC32 of tag + length + payload
CHUNK_HEAD = "<HH"  # chunk index, chunk count
CHUNK_TAIL = "<HI"  # accuracy in 1/10000 (0xFFFF: not measured), CRC32 of the packed layers
NOT_MEASURED = 0xFFFF
BASES = ("fastfood", "dense")
KINDS = {
    "conv_u8": bnn.CONV_U8,
    "bconv": bnn.BCONV,
    "bdense": bnn.BDENSE,
    "dense_out": bnn.DENSE_OUT,
}
MAX_RECORD = 1 << 24
GEOMETRY = ("k", "stride", "pad", "cin", "cout", "in_h", "in_w", "pool")


def chunk_end(k: int, chunks: int, count: int) -> int:
    """How many of a layer's k alphas the first `count` of `chunks` chunks carry:
    ceil(count * k / chunks), so the first chunk already has at least one of every layer."""
    return -(-count * k // chunks)


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise FormatError("not a valid .pranc stream: " + what)


def record(tag: bytes, payload: bytes) -> bytes:
    head = struct.pack(RECORD, tag, len(payload))
    return head + payload + struct.pack("<I", binascii.crc32(head + payload) & 0xFFFFFFFF)


def header() -> bytes:
    return struct.pack(HEADER, MAGIC, VERSION_MAJOR, VERSION_MINOR)


def geometry_layers(head: dict) -> list:
    """bnn.Layer shells (no weights) for the header's layers, checked as a .bnn chain."""
    layers = []
    for d in head["layers"]:
        geometry = {g: d[g] for g in GEOMETRY}
        layers.append(bnn.Layer(kind=KINDS[d["kind"]], weights=b"", **geometry))
    return layers


def weight_count(layer) -> int:
    if layer.is_conv:
        return layer.cout * layer.cin * layer.k * layer.k
    return layer.cout * layer.cin


def fixed_size(layer) -> int:
    """Bytes of a layer's entry in FIXD."""
    c = layer.cout
    if layer.kind == bnn.CONV_U8:
        return 8 + 4 * c + 8 + 16 * c  # scale, bias, eps, gamma/beta/mean/var of the next BN
    if layer.kind == bnn.DENSE_OUT:
        return 8 + 4 * c  # scale, bias
    return 8 + 4 * c + (c + 7) // 8  # scale, thresholds, flips


def _check_head(head) -> None:
    _check(
        isinstance(head, dict) and head.get("format") == "binsort-pranc",
        "HEAD is not binsort-pranc",
    )
    hash_ = head.get("hash")
    _check(isinstance(hash_, dict), "HEAD names no hash")
    if hash_.get("id") != HASH_ID or hash_.get("version") != HASH_VERSION:
        raise FormatError(
            "unknown basis hash %r version %r (this binsort has %s version %d); upgrade binsort"
            % (hash_.get("id"), hash_.get("version"), HASH_ID, HASH_VERSION)
        )
    _check(head.get("basis") in BASES, "unknown basis %r" % (head.get("basis"),))
    seed = head.get("seed")
    _check(isinstance(seed, int) and 0 <= seed <= 0xFFFFFFFF, "seed is not a 32-bit integer")
    chunks = head.get("chunks")
    _check(isinstance(chunks, int) and 1 <= chunks <= 0xFFFF, "bad chunk count")
    arch = head.get("arch")
    _check(isinstance(arch, str) and arch, "HEAD names no architecture")
    bnn.check_meta(head)
    specs = head.get("layers")
    _check(isinstance(specs, list) and 2 <= len(specs) <= 256, "HEAD has no layer list")
    for i, d in enumerate(specs):
        _check(isinstance(d, dict), "layer %d is not an object" % i)
        if d.get("kind") not in KINDS:
            raise FormatError(
                "architecture %r uses layer kind %r that this edge cannot run"
                % (arch, d.get("kind"))
            )
        for g in GEOMETRY + ("alphas",):
            v = d.get(g)
            _check(isinstance(v, int) and 0 <= v < 1 << 24, "layer %d has a bad %s" % (i, g))
    try:
        layers = geometry_layers(head)
        for i, layer in enumerate(layers):
            bnn.check_geometry(layer, i)
        bnn.check_chain(head, layers)
    except FormatError as e:
        raise FormatError(
            "architecture %r cannot run on this edge: %s" % (arch, str(e).split(": ", 1)[-1])
        ) from None
    for i in range(len(layers)):  # zip(strict=) is not in MicroPython; the lengths are equal
        layer, k = layers[i], specs[i]["alphas"]
        _check(
            1 <= k <= weight_count(layer),
            "layer %d has %d alphas for %d weights" % (i, k, weight_count(layer)),
        )


class Chunk:
    """One ACHK record: its index, the alphas it adds per layer, accuracy and model CRC."""

    def __init__(self, index, alphas, accuracy, digest, end):
        self.index = index
        self.alphas = alphas  # list per layer of int lists
        self.accuracy = accuracy  # fraction, or None when the host did not measure it
        self.digest = digest
        self.end = end  # stream bytes up to the end of this chunk


class StreamReader:
    """Incremental parser. feed() bytes as they come; it returns what became complete:
    ("head", dict), ("fixed", bytes), ("chunk", Chunk) or ("done", None)."""

    def __init__(self):
        self.buf = b""
        self.pos = 0  # stream bytes consumed
        self.head = None
        self.layers = None
        self.fixed = None
        self.chunks_seen = 0
        self.done = False
        self._sha = hashlib.sha256()
        self._started = False

    def feed(self, data: bytes) -> list:
        """push() then every event now complete. On damage the events before it are lost to
        the caller: a receiver that must act on each should use push() and next_event()."""
        self.push(data)
        events = []
        event = self.next_event()
        while event is not None:
            events.append(event)
            event = self.next_event()
        return events

    def push(self, data: bytes) -> None:
        self.buf += bytes(data)

    def next_event(self):
        """The next complete record as an event, None until more bytes arrive; FormatError
        for damage (nothing is consumed then, so the error repeats)."""
        if not self._started:
            hn = struct.calcsize(HEADER)
            if len(self.buf) < hn:
                return None
            magic, major, minor = struct.unpack_from(HEADER, self.buf)
            _check(magic == MAGIC, wrong_magic(self.buf[:64]))
            if major != VERSION_MAJOR:
                raise FormatError(
                    "unsupported .pranc format version %d.%d (this binsort reads %d.x); "
                    "upgrade binsort" % (major, minor, VERSION_MAJOR)
                )
            self._take(hn)
            self._started = True
        rn = struct.calcsize(RECORD)
        if len(self.buf) < rn:
            return None
        tag, length = struct.unpack_from(RECORD, self.buf)
        _check(length <= MAX_RECORD, "record of %d bytes" % length)
        if len(self.buf) < rn + length + 4:
            return None
        crc = struct.unpack_from("<I", self.buf, rn + length)[0]
        _check(
            binascii.crc32(self.buf[: rn + length]) & 0xFFFFFFFF == crc,
            "CRC mismatch in the record at byte %d (%r)" % (self.pos, tag),
        )
        event = self._record(tag, self.buf[rn : rn + length])
        self._take(rn + length + 4)
        if event[0] == "chunk":
            event[1].end = self.pos
        return event

    def _take(self, n: int) -> None:
        if not self.done:
            self._sha.update(self.buf[:n])
        self.buf = self.buf[n:]
        self.pos += n

    def _record(self, tag: bytes, payload: bytes):
        _check(not self.done, "data after DONE")
        if self.head is None:
            _check(tag == b"HEAD", "the first record is %r, not HEAD" % (tag,))
            try:
                head = json.loads(payload.decode("utf-8"))
            except (ValueError, UnicodeError, RuntimeError, MemoryError):  # or nested too deep
                raise FormatError("not a valid .pranc stream: HEAD is not UTF-8 JSON") from None
            _check_head(head)
            self.head = head
            self.layers = geometry_layers(head)
            return ("head", head)
        if self.fixed is None:
            _check(tag == b"FIXD", "the second record is %r, not FIXD" % (tag,))
            want = sum(fixed_size(layer) for layer in self.layers)
            _check(len(payload) == want, "FIXD is %d bytes, expected %d" % (len(payload), want))
            self.fixed = payload
            return ("fixed", payload)
        if tag == b"DONE":
            _check(
                self.chunks_seen == self.head["chunks"],
                "DONE after %d of %d chunks" % (self.chunks_seen, self.head["chunks"]),
            )
            _check(payload == self._sha.digest(), "SHA-256 mismatch")
            self.done = True
            return ("done", None)
        _check(tag == b"ACHK", "unknown record %r" % (tag,))
        return ("chunk", self._chunk(payload))

    def _chunk(self, payload: bytes) -> Chunk:
        hn, tn = struct.calcsize(CHUNK_HEAD), struct.calcsize(CHUNK_TAIL)
        _check(len(payload) >= hn + tn, "chunk too short")
        index, count = struct.unpack_from(CHUNK_HEAD, payload)
        chunks = self.head["chunks"]
        _check(count == chunks, "chunk says %d chunks, HEAD says %d" % (count, chunks))
        _check(
            index == self.chunks_seen,
            "chunk %d arrived where chunk %d was expected" % (index, self.chunks_seen),
        )
        sizes = []
        for d in self.head["layers"]:
            k = d["alphas"]
            sizes.append(chunk_end(k, chunks, index + 1) - chunk_end(k, chunks, index))
        n = sum(sizes)
        _check(
            len(payload) == hn + 2 * n + tn,
            "chunk %d carries %d alpha bytes, HEAD's counts make %d"
            % (index, len(payload) - hn - tn, 2 * n),
        )
        flat = struct.unpack_from("<%dh" % n, payload, hn)
        alphas, at = [], 0
        for s in sizes:
            alphas.append(list(flat[at : at + s]))
            at += s
        acc, digest = struct.unpack_from(CHUNK_TAIL, payload, hn + 2 * n)
        _check(acc <= 10000 or acc == NOT_MEASURED, "chunk %d has accuracy %d" % (index, acc))
        self.chunks_seen += 1
        return Chunk(index, alphas, None if acc == NOT_MEASURED else acc / 10000, digest, 0)


def chunk_record(index: int, chunks: int, alphas: list, accuracy, digest: int) -> bytes:
    """An ACHK record; `alphas` per layer, the run this chunk adds; accuracy a fraction or None."""
    flat = [int(a) for run in alphas for a in run]
    acc = NOT_MEASURED if accuracy is None else int(round(accuracy * 10000))
    payload = struct.pack(CHUNK_HEAD, index, chunks)
    payload += struct.pack("<%dh" % len(flat), *flat)
    payload += struct.pack(CHUNK_TAIL, acc, digest & 0xFFFFFFFF)
    return record(b"ACHK", payload)


def layers_digest(layers: list) -> int:
    """CRC32 of the packed layers as a .bnn 1.2 stores them (int32 thresholds, so streams
    packed before 1.3 still check): what reconstruction must reproduce."""
    crc = 0
    for layer in layers:
        crc = binascii.crc32(bnn.layer_payload(layer, narrow=False), crc)
    return crc & 0xFFFFFFFF


def done_record(stream_so_far: bytes) -> bytes:
    return record(b"DONE", hashlib.sha256(stream_so_far).digest())


def head_record(head: dict) -> bytes:
    return record(b"HEAD", json.dumps(head, sort_keys=True).encode("utf-8"))


def parse_fixed(layers: list, payload: bytes) -> list:
    """FIXD -> one dict per layer: `scale` (theta_real = scale * V @ alpha) and
    conv_u8: bias, eps, gamma, beta, mean, var (the next BatchNorm, folded by the edge);
    bconv/bdense: thresholds, flips (bytes as a .bnn layer stores them); dense_out: bias."""
    out, at = [], 0
    for layer in layers:
        c = layer.cout
        entry = {"scale": struct.unpack_from("<d", payload, at)[0]}
        at += 8
        _check(entry["scale"] > 0 and entry["scale"] < 1e30, "a layer scale is not positive")
        if layer.kind == bnn.CONV_U8:
            entry["bias"] = struct.unpack_from("<%df" % c, payload, at)
            at += 4 * c
            entry["eps"] = struct.unpack_from("<d", payload, at)[0]
            at += 8
            for name in ("gamma", "beta", "mean", "var"):
                entry[name] = struct.unpack_from("<%df" % c, payload, at)
                at += 4 * c
        elif layer.kind == bnn.DENSE_OUT:
            entry["bias"] = struct.unpack_from("<%df" % c, payload, at)
            at += 4 * c
        else:
            entry["thresholds"] = bytes(payload[at : at + 4 * c])
            at += 4 * c
            entry["flips"] = bytes(payload[at : at + (c + 7) // 8])
            at += (c + 7) // 8
        for name in ("bias", "eps", "gamma", "beta", "mean", "var"):
            values = entry.get(name, ())
            values = values if isinstance(values, tuple) else (values,)
            _check(all(math.isfinite(v) for v in values), "a FIXD %s is not a finite number" % name)
        out.append(entry)
    return out


def fixed_payload(layers: list, entries: list) -> bytes:
    """The inverse of parse_fixed (floats are stored as float32, scales and eps as float64)."""
    parts = []
    for i in range(len(layers)):
        layer, e = layers[i], entries[i]
        c = layer.cout
        parts.append(struct.pack("<d", e["scale"]))
        if layer.kind == bnn.CONV_U8:
            parts.append(struct.pack("<%df" % c, *e["bias"]))
            parts.append(struct.pack("<d", e["eps"]))
            for name in ("gamma", "beta", "mean", "var"):
                parts.append(struct.pack("<%df" % c, *e[name]))
        elif layer.kind == bnn.DENSE_OUT:
            parts.append(struct.pack("<%df" % c, *e["bias"]))
        else:
            parts.append(bytes(e["thresholds"]) + bytes(e["flips"]))
    return b"".join(parts)
