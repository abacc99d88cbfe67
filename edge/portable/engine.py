"""The portable engine: a `.bnn` model in pure Python, for MicroPython as well as CPython.

It computes exactly what the numpy engine (edge.engine) computes, from the same file read by
the same reader (protocol.bnn), using only what MicroPython 1.27 has: ints, bytes, bytearray,
struct and math. A binary map is a list of rows; a row is a list of Python ints, one per pixel,
whose bit c is channel c (1 = -1), the layout of docs/format.md read as one little-endian
number. A k x k patch is those pixel ints joined into one number, in the (ky, kx, channel)
order of the packed weights, so a binary convolution output is
`n - 2 * popcount(patch ^ weight_row)` with one XOR and one popcount per output channel.
Popcount is a byte table over x.to_bytes() (MicroPython has no int.bit_count).
Thresholds, flips, the AND/OR max-pool on packed bits and the +1 padding follow
docs/format.md.

Images come as the model's preprocessed 8-bit grey input: raw bytes (height * width) or a PGM
(P5) file (MicroPython has no PNG decoder); `binsort-edge pgm` writes one for any image.
"""

import math
import struct

from protocol.bnn import BCONV, BDENSE, CONV_U8, DENSE_OUT
from protocol.errors import FormatError

_BITS = bytes(bin(i).count("1") for i in range(256))


def popcount(x: int, nbytes: int) -> int:
    """Set bits of a non-negative int below 2**(8*nbytes), by a byte table: under MicroPython
    (WebAssembly) twice as fast as bin(x).count("1"), measured on 288-bit patches."""
    total = 0
    for b in x.to_bytes(nbytes, "little"):
        total += _BITS[b]
    return total


def _ints(data, fmt: str, count: int) -> list:
    return list(struct.unpack("<%d%s" % (count, fmt), data))


def _flip_mask(layer) -> int:
    return int.from_bytes(bytes(layer.flips), "little") & ((1 << layer.cout) - 1)


class _Layer:
    """One layer's tables, decoded once at load time."""

    def __init__(self, layer):
        self.layer = layer
        k, cin, cout = layer.k, layer.cin, layer.cout
        if layer.kind == CONV_U8:
            w = _ints(layer.weights, "b", cout * k * k * cin)
            per = k * k * cin
            self.rows = [w[c * per : (c + 1) * per] for c in range(cout)]
        elif layer.kind in (BCONV, BDENSE):
            per = (k * k * cin if layer.kind == BCONV else cin) // 8
            wb = bytes(layer.weights)
            self.rows = [int.from_bytes(wb[c * per : (c + 1) * per], "little") for c in range(cout)]
            self.n = per * 8
        else:
            w = _ints(layer.weights, "h", cout * cin)
            self.rows = [w[c * cin : (c + 1) * cin] for c in range(cout)]
            self.row_sums = [sum(r) for r in self.rows]
            self.bias = _ints(layer.bias, "i", cout)
        if layer.kind != DENSE_OUT:
            self.thresholds = _ints(layer.thresholds, "i", cout)
            self.flips = _flip_mask(layer)
            self.keep = ((1 << cout) - 1) ^ self.flips  # channels that pool with AND

    def bits(self, accs: list) -> int:
        """Accumulators of one pixel -> its packed output bits."""
        v = 0
        t = self.thresholds
        for c in range(len(accs)):
            if accs[c] < t[c]:
                v |= 1 << c
        return v ^ self.flips

    def pool(self, rows: list) -> list:
        p = self.layer.pool
        if p == 1:
            return rows
        out = []
        for y in range(0, len(rows) // p * p, p):
            window = rows[y : y + p]
            row = []
            for x in range(0, len(rows[y]) // p * p, p):
                all_ = self.keep
                any_ = 0
                for r in window:
                    for v in r[x : x + p]:
                        all_ &= v
                        any_ |= v
                row.append(all_ | (any_ & self.flips))
            out.append(row)
        return out


class PortableEngine:
    """Runs a parsed BnnModel on one image at a time; `scores` gives the exact integers."""

    name = "portable"

    def __init__(self, model):
        self.model = model
        self.layers = [_Layer(layer) for layer in model.layers]
        self.out_scale = model.layers[-1].scale

    def scores(self, image) -> list:
        """8-bit grey model input (bytes of height * width) -> integer class scores."""
        out = []
        for _ in self.steps(image, out):
            pass
        return out

    def steps(self, image, out: list):
        """scores() one output row at a time: a generator that yields after every row of every
        layer and leaves the scores in `out`. A caller between steps sees the live heap of the
        computation (tools/micropython.mjs measures the peak that way)."""
        h, w = self.model.input_shape
        if len(image) != h * w:
            raise FormatError("the image has %d bytes, this model takes %dx%d" % (len(image), h, w))
        x, channels = None, 1
        for p in self.layers:
            kind = p.layer.kind
            rows = []
            if kind == CONV_U8:
                yield from self._conv_u8(p, image, h, w, rows)
                x = p.pool(rows)
            elif kind == BCONV:
                yield from self._bconv(p, x, rows)
                x = p.pool(rows)
            elif kind == BDENSE:
                x = self._bdense(p, _flatten(x, channels))
            else:
                out[:] = self._dense_out(p, _flatten(x, channels))
                yield
                return
            channels = p.layer.cout
            yield
        raise FormatError("the model has no output layer")

    def _conv_u8(self, p, image, h, w, out):
        layer = p.layer
        k, s, pad = layer.k, layer.stride, layer.pad
        # centred pixels 2p - 255, padded with a centred 0
        grid = [[0] * (w + 2 * pad) for _ in range(pad)]
        for y in range(h):
            row = image[y * w : (y + 1) * w]
            grid.append([0] * pad + [2 * v - 255 for v in row] + [0] * pad)
        grid += [[0] * (w + 2 * pad) for _ in range(pad)]
        ho, wo = layer.conv_out()
        for oy in range(ho):
            rows = grid[oy * s : oy * s + k]
            out_row = []
            for ox in range(wo):
                patch = []
                for r in rows:
                    patch += r[ox * s : ox * s + k]
                accs = [sum(wv * pv for wv, pv in zip(wr, patch)) for wr in p.rows]  # noqa: B905 (no strict= in MicroPython)
                out_row.append(p.bits(accs))
            out.append(out_row)
            yield

    def _bconv(self, p, x, out):
        layer = p.layer
        k, s, pad, cin = layer.k, layer.stride, layer.pad, layer.cin
        width = len(x[0]) + 2 * pad
        grid = [[0] * width for _ in range(pad)]
        for row in x:
            grid.append([0] * pad + row + [0] * pad)  # +1 padding is bit 0
        grid += [[0] * width for _ in range(pad)]
        ho, wo = layer.conv_out()
        n, wrows, t, flips = p.n, p.rows, p.thresholds, p.flips
        nb = n // 8
        for oy in range(ho):
            rows = grid[oy * s : oy * s + k]
            out_row = []
            for ox in range(wo):
                patch, shift = 0, 0
                for r in rows:
                    for kx in range(k):
                        patch |= r[ox * s + kx] << shift
                        shift += cin
                v = 0
                for c in range(len(wrows)):
                    if n - 2 * popcount(patch ^ wrows[c], nb) < t[c]:
                        v |= 1 << c
                out_row.append(v ^ flips)
            out.append(out_row)
            yield

    def _bdense(self, p, v: int) -> int:
        n, t = p.n, p.thresholds
        out = 0
        for c in range(len(p.rows)):
            if n - 2 * popcount(v ^ p.rows[c], n // 8) < t[c]:
                out |= 1 << c
        return out ^ p.flips

    def _dense_out(self, p, v: int) -> list:
        # x_i = +1 for bit 0, -1 for bit 1: score = sum(w) - 2 * sum(w over set bits) + bias
        cin = p.layer.cin
        ones = [i for i in range(cin) if (v >> i) & 1]
        return [
            p.row_sums[c] - 2 * sum(p.rows[c][i] for i in ones) + p.bias[c]
            for c in range(len(p.rows))
        ]

    def classify(self, image) -> "tuple":
        """(label index, confidence, real-valued scores) as the numpy engine's classify()."""
        return self.decide(self.scores(image))

    def decide(self, ints: list) -> "tuple":
        """(label index, confidence, real-valued scores) of integer scores."""
        real = [v * self.out_scale for v in ints]
        top = max(real)
        exps = [math.exp(r - top) for r in real]
        total = sum(exps)
        best = 0
        for i in range(1, len(ints)):
            if ints[i] > ints[best]:
                best = i
        return best, exps[best] / total, real

    def self_test(self) -> list:
        """Indices of golden inputs whose scores differ from those stored with the model."""
        return [
            i for i, (img, want) in enumerate(self.model.golden) if self.scores(img) != list(want)
        ]


def _flatten(x, channels: int) -> int:
    """A map (rows of pixel ints) -> one int in (h, w, c) order; a dense layer's int as it is."""
    if isinstance(x, int):
        return x
    v, shift = 0, 0
    for row in x:
        for pix in row:
            v |= pix << shift
            shift += channels
    return v


def read_pgm(data: bytes) -> "tuple":
    """(width, height, pixel bytes) of an 8-bit binary PGM (P5); FormatError otherwise."""
    fields, at = [], 0
    while len(fields) < 4:
        while at < len(data) and data[at] in b" \t\r\n":
            at += 1
        if at < len(data) and data[at] == ord("#"):
            while at < len(data) and data[at] not in b"\r\n":
                at += 1
            continue
        start = at
        while at < len(data) and data[at] not in b" \t\r\n#":
            at += 1
        if start == at:
            raise FormatError("not a PGM file: the header ends early")
        fields.append(bytes(data[start:at]))
    if fields[0] != b"P5":
        raise FormatError("not a binary PGM (P5) file")
    try:
        w, h, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    except ValueError:
        raise FormatError("not a PGM file: bad width, height or maxval") from None
    if maxval != 255 or w < 1 or h < 1:
        raise FormatError("only 8-bit PGM (maxval 255) is supported")
    pixels = data[at + 1 : at + 1 + w * h]
    if len(pixels) != w * h:
        raise FormatError("PGM pixel data is truncated")
    return w, h, bytes(pixels)


def write_pgm(width: int, height: int, pixels: bytes) -> bytes:
    return b"P5\n%d %d\n255\n" % (width, height) + bytes(pixels)
