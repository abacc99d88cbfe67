"""PRANC streams on the edge: seed + alphas -> the packed model, exactly as the host packs it.

`build_layers` turns integer weights `V @ alpha` into deployed `.bnn` layers; the host packs
with this same function, from its torch reconstruction, so both sides produce byte-identical
layers (every chunk carries a CRC32 of them, which `PrancDecoder` checks). Reconstruction runs
one layer at a time: the working memory is about one layer's weights, never k x d.

`PrancDecoder` takes the stream as it arrives and holds the last good prefix model: a damaged
chunk raises FormatError and leaves that model in place.
"""

import struct

import numpy as np

from edge.engine.basis import reconstruct
from edge.engine.bits import pack_signs
from protocol import bnn
from protocol import pranc as fmt
from protocol.errors import FormatError
from protocol.fold import fold_thresholds


def _round_div(num: np.ndarray, den) -> np.ndarray:
    """round(num / den) for int64 num >= 0, den > 0, halves away from zero, exact."""
    return (2 * num + den) // (2 * den)


def _requantise(theta: np.ndarray, qmax: int, axis_rows: bool):
    """theta (int64) -> (int weights in [-qmax, qmax], the max |theta| they are relative to),
    per row when axis_rows, else over the whole array."""
    mag = np.abs(theta)
    if axis_rows:
        m = mag.reshape(len(theta), -1).max(axis=1)
        m_b = m.reshape((-1,) + (1,) * (theta.ndim - 1))
    else:
        m = mag.max()
        m_b = m
    q = np.where(m_b > 0, _round_div(qmax * mag, np.maximum(m_b, 1)), 0)
    return np.sign(theta) * q, m


def _hwc(w: np.ndarray, prev) -> np.ndarray:
    """Rows over a (C, H, W) flattening -> the engine's (H, W, C) order when prev is a conv."""
    if not prev.is_conv:
        return w
    oh, ow = prev.out_shape()
    return w.reshape(len(w), prev.cout, oh, ow).transpose(0, 2, 3, 1).reshape(len(w), -1)


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def build_layer(shell, prev, entry: dict, theta: np.ndarray):
    """One deployed layer from its geometry, FIXD entry and integer weights V @ alpha."""
    k, cin, cout = shell.k, shell.cin, shell.cout
    geometry = shell.geometry()
    if shell.kind == bnn.CONV_U8:
        theta = theta.reshape(cout, cin, k, k)
        w8, m = _requantise(theta, 127, True)
        scale = entry["scale"]
        a = [float(mc) * scale / (127 * 255) for mc in m.tolist()]
        ts, flips = fold_thresholds(
            a,
            entry["bias"],
            entry["gamma"],
            entry["beta"],
            entry["mean"],
            entry["var"],
            entry["eps"],
        )
        return bnn.Layer(
            **geometry,
            weights=w8.transpose(0, 2, 3, 1).astype(np.int8).tobytes(),
            thresholds=np.array(ts, dtype="<i4").tobytes(),
            flips=np.packbits(np.array(flips, dtype=bool), bitorder="little").tobytes(),
        )
    if shell.kind == bnn.BCONV:
        neg = theta.reshape(cout, cin, k, k).transpose(0, 2, 3, 1) < 0  # sign(0) = +1
        bits = pack_signs(np.ascontiguousarray(neg)).tobytes()
        return bnn.Layer(
            **geometry, weights=bits, thresholds=entry["thresholds"], flips=entry["flips"]
        )
    if shell.kind == bnn.BDENSE:
        neg = _hwc(theta.reshape(cout, cin), prev) < 0
        bits = pack_signs(np.ascontiguousarray(neg)).tobytes()
        return bnn.Layer(
            **dict(geometry, pool=1),
            weights=bits,
            thresholds=entry["thresholds"],
            flips=entry["flips"],
        )
    w16, m = _requantise(theta.reshape(cout, cin), 32767, False)
    out_scale = _f32(float(max(int(m), 1)) * entry["scale"] / 32767)
    bias = np.round(np.array(entry["bias"], dtype=np.float64) / out_scale)
    bias = np.clip(bias, -(2**31) + 1, 2**31 - 1).astype("<i4")
    return bnn.Layer(
        **dict(geometry, pool=1),
        weights=_hwc(w16, prev).astype("<i2").tobytes(),
        bias=bias.tobytes(),
        scale=out_scale,
    )


def build_layers(head: dict, fixed: bytes, thetas) -> list:
    """Deployed layers from the stream's HEAD, FIXD and a callable or list giving each layer's
    int64 weights (called one layer at a time, so only one is alive at once)."""
    shells = fmt.geometry_layers(head)
    entries = fmt.parse_fixed(shells, fixed)
    layers = []
    for i, (shell, entry) in enumerate(zip(shells, entries, strict=True)):
        theta = thetas(i) if callable(thetas) else np.asarray(thetas[i], dtype=np.int64)
        layers.append(build_layer(shell, layers[-1] if layers else None, entry, theta))
    return layers


def model_meta(head: dict, chunks: int) -> dict:
    """A .bnn META for the model made of the first `chunks` chunks of a stream."""
    meta = {
        k: head[k]
        for k in ("arch", "labels", "input", "model_id", "version", "created")
        if k in head
    }
    meta.update(
        {
            "format": "binsort-bnn",
            "source": "pranc",
            "pranc": {"chunks": chunks, "of": head["chunks"], "seed": head["seed"]},
        }
    )
    return meta


class PrancDecoder:
    """Feeds a `.pranc` stream in any pieces; keeps int16 alphas and the last good model.

    `build="each"` rebuilds and verifies the model after every chunk (a receiver activating
    prefixes); `build="last"` only when asked (`model()`), which is what reading a file needs.
    """

    def __init__(self, build: str = "each"):
        self.reader = fmt.StreamReader()
        self.build = build
        self.alphas = None  # per layer: list of int arrays received so far
        self.chunks = 0
        self.last_chunk = None
        self.good = None  # the last verified prefix model (BnnModel)
        self.good_chunks = 0
        self.failed = None  # the FormatError that stopped the stream

    @property
    def head(self):
        return self.reader.head

    @property
    def done(self) -> bool:
        return self.reader.done

    @property
    def bytes_used(self) -> int:
        """Stream bytes up to the end of the last complete chunk."""
        return self.last_chunk.end if self.last_chunk else self.reader.pos

    def feed(self, data: bytes, on_chunk=None) -> list:
        """Parse what arrived; returns the chunk indices completed. With build="each",
        `on_chunk(model)` is called with each new prefix model as soon as it is verified.
        FormatError on damage; the last good model stays, and once the stream has proved
        damaged every later feed() raises the same error (nothing after it can be trusted)."""
        if self.failed is not None:
            raise self.failed
        try:
            return self._feed(data, on_chunk)
        except FormatError as e:
            self.failed = e
            raise

    def _feed(self, data: bytes, on_chunk) -> list:
        done = []
        self.reader.push(data)
        while True:
            event = self.reader.next_event()
            if event is None:
                return done
            kind, value = event
            if kind == "head":
                self.alphas = [[] for _ in value["layers"]]
            elif kind == "chunk":
                previous = self.last_chunk
                for run, part in zip(self.alphas, value.alphas, strict=True):
                    run.append(np.array(part, dtype=np.int64))
                self.chunks += 1
                self.last_chunk = value
                if self.build == "each":
                    try:
                        model = self.model()
                    except FormatError:  # back to the last good prefix
                        for run in self.alphas:
                            run.pop()
                        self.chunks -= 1
                        self.last_chunk = previous
                        raise
                    if on_chunk is not None:
                        on_chunk(model)
                done.append(value.index)

    def layer_alphas(self, i: int) -> np.ndarray:
        parts = self.alphas[i]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def theta(self, i: int) -> np.ndarray:
        d = self.head["layers"][i]
        shell = self.reader.layers[i]
        return reconstruct(
            self.head["basis"],
            self.head["seed"],
            i,
            self.layer_alphas(i),
            fmt.weight_count(shell),
            d["alphas"],
        )

    def model(self) -> bnn.BnnModel:
        """The model made of every chunk received, verified against the host's CRC32."""
        if self.reader.fixed is None:
            raise FormatError("the stream ends before its fixed part: no model yet")
        if self.good is not None and self.good_chunks == self.chunks:
            return self.good
        layers = build_layers(self.head, self.reader.fixed, self.theta)
        if self.last_chunk is not None:
            got = fmt.layers_digest(layers)
            if got != self.last_chunk.digest:
                raise FormatError(
                    "the model rebuilt from %d chunks does not match the host's (CRC32 %08x, "
                    "expected %08x): this edge's basis differs"
                    % (self.chunks, got, self.last_chunk.digest)
                )
        model = bnn.BnnModel(model_meta(self.head, self.chunks), layers, [], b"")
        bnn.check_chain(model.meta, layers)
        self.good, self.good_chunks = model, self.chunks
        return model


def read_pranc(data: bytes, prefix_bytes=None) -> "tuple[bnn.BnnModel, PrancDecoder]":
    """The model from a whole stream, or from its longest prefix within `prefix_bytes` that ends
    on a chunk boundary. FormatError for damage or a stream cut inside a record."""
    if prefix_bytes is not None:
        data = data[:prefix_bytes]
    dec = PrancDecoder(build="last")
    dec.feed(data)
    if dec.reader.buf and prefix_bytes is None:
        raise FormatError(
            "not a valid .pranc stream: truncated inside a record after %d complete chunks "
            "(%d bytes)" % (dec.chunks, dec.bytes_used)
        )
    return dec.model(), dec


def read_pranc_file(path: str, prefix_bytes=None):
    """read_pranc on a file; errors carry the path."""
    return bnn.read_model_file(path, lambda data: read_pranc(data, prefix_bytes))
