"""The numpy XNOR-popcount engine: runs a `.bnn` model on batches of 8-bit grey images.

Activations between layers are bit-packed along the channel axis (bit 1 = -1, least significant
bit first, so bytes read as little-endian words are the words of docs/format.md). A binary layer
computes each dot product of two +-1 vectors of length n as n - 2 * popcount(a XOR w), compares
it with the layer's integer threshold and writes packed bits; 2x2 max-pooling then works on the
packed words: a -1 survives only where all four inputs are -1 (AND), except in channels whose
threshold is flipped, where the pooled max of the accumulator is the min of the bits (OR).
Every number is an integer until the output layer's one float scale.
On numpy >= 2 the popcounts are np.bitwise_count. numpy 1.24 (Raspberry Pi OS bookworm) has no
bitwise_count; there a binary layer is a +-1 float32 matrix product through BLAS instead, exact
because every partial sum is an integer far below 2**24. Measured on numpy 1.24.4 for layers of
this network (tools/bench-engines, docs/engines.md): 3-5x faster than a byte table, 1.1-2.4x
faster than SWAR on uint64.
"""

import numpy as np

from protocol.bnn import BCONV, BDENSE, CONV_U8, DENSE_OUT, BnnModel


def pack_signs(negative: np.ndarray) -> np.ndarray:
    """Pack a boolean array (True = -1) along its last axis, LSB first; the length must be a
    multiple of 8. Used for weights by the host packer and for activations here."""
    return np.packbits(negative, axis=-1, bitorder="little")


def unpack_signs(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of pack_signs, as +-1 int8 values."""
    bits = np.unpackbits(packed, axis=-1, count=count, bitorder="little")
    return (1 - 2 * bits.astype(np.int8)).astype(np.int8)


HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")


def _signs(packed: np.ndarray, count: int) -> np.ndarray:
    """Packed bits (..., bytes) -> +-1 float32 (..., count) for the BLAS path."""
    bits = np.unpackbits(packed, axis=-1, count=count, bitorder="little")
    return 1.0 - 2.0 * bits.astype(np.float32)


def _popcount_sum(words: np.ndarray) -> np.ndarray:
    """Sum of set bits over the last axis (numpy >= 2)."""
    return np.bitwise_count(words).sum(axis=-1, dtype=np.int32)


def _as_words(packed: np.ndarray) -> np.ndarray:
    """View packed bytes (last axis) as the widest little-endian words that divide it."""
    n = packed.shape[-1]
    packed = np.ascontiguousarray(packed)
    for dtype, size in ((np.dtype("<u8"), 8), (np.dtype("<u4"), 4)):
        if n % size == 0:
            return packed.view(dtype)
    return packed


def _pad_to_bytes(bits: np.ndarray) -> np.ndarray:
    """Pad the last axis of a boolean array with False (+1) to a multiple of 8."""
    extra = (-bits.shape[-1]) % 8
    if not extra:
        return bits
    return np.concatenate([bits, np.zeros(bits.shape[:-1] + (extra,), dtype=bool)], axis=-1)


class _Prepared:
    """One layer's arrays, decoded once at load time."""

    def __init__(self, layer):
        self.layer = layer
        k, cin, cout = layer.k, layer.cin, layer.cout
        if layer.kind == CONV_U8:
            w = np.frombuffer(layer.weights, dtype=np.int8).reshape(cout, k * k * cin)
            # float32 BLAS is exact here: every partial sum is an integer of magnitude at most
            # k*k*255*128, far below 2**24 (numpy's integer matmul does not use BLAS)
            self.weights = w.astype(np.float32).T.copy()  # (k*k*cin, cout)
        elif layer.kind in (BCONV, BDENSE):
            self.n = k * k * cin if layer.kind == BCONV else cin
            w = np.frombuffer(layer.weights, dtype=np.uint8).reshape(cout, self.n // 8)
            if HAS_BITWISE_COUNT:
                self.weights = _as_words(w)
            else:
                self.weights = np.ascontiguousarray(_signs(w, self.n).T)  # (n, cout) +-1
        else:
            w = np.frombuffer(layer.weights, dtype="<i2").reshape(cout, cin)
            self.weights = w.astype(np.int64).T.copy()  # (cin, cout)
            self.bias = np.frombuffer(layer.bias, dtype="<i4").astype(np.int64)
        if layer.kind != DENSE_OUT:
            self.thresholds = np.frombuffer(layer.thresholds, dtype="<i4").astype(np.int64)
            self.flips = np.unpackbits(
                np.frombuffer(layer.flips, dtype=np.uint8), count=cout, bitorder="little"
            ).astype(bool)
            self.flip_bytes = pack_signs(_pad_to_bytes(self.flips))

    def threshold(self, acc: np.ndarray) -> np.ndarray:
        """Integer accumulators (..., cout) -> packed output bits (..., ceil(cout / 8))."""
        return pack_signs(_pad_to_bytes((acc < self.thresholds) ^ self.flips))

    def pool(self, packed: np.ndarray) -> np.ndarray:
        """2x2 stride-2 max-pool on packed maps (N, H, W, B): AND, or OR in flipped channels."""
        if self.layer.pool == 1:
            return packed
        h, w = packed.shape[1] // 2 * 2, packed.shape[2] // 2 * 2
        a, b = packed[:, 0:h:2, 0:w:2], packed[:, 0:h:2, 1:w:2]
        c, d = packed[:, 1:h:2, 0:w:2], packed[:, 1:h:2, 1:w:2]
        both = a & b & c & d
        either = a | b | c | d
        return (both & ~self.flip_bytes) | (either & self.flip_bytes)


def _patches(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """(N, H, W, C) padded -> (N, Ho, Wo, k*k*C) sliding windows in (ky, kx, c) order."""
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    win = win[:, ::stride, ::stride]  # (N, Ho, Wo, C, k, k)
    n, ho, wo = win.shape[:3]
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n, ho, wo, -1)


class Engine:
    """Runs a parsed BnnModel. `scores` gives the exact integer class scores."""

    name = "numpy"

    def describe(self) -> str:
        """The engine as `--verbose` and the daemon status name it."""
        return self.name

    def __init__(self, model: BnnModel, chunk: int = 64):
        self.model = model
        self.layers = [_Prepared(layer) for layer in model.layers]
        self.out_scale = model.layers[-1].scale
        self.chunk = chunk

    def scores(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) model inputs -> int64 (N, classes) scores."""
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 2:
            images = images[None]
        out = [self._run(images[i : i + self.chunk]) for i in range(0, len(images), self.chunk)]
        return np.concatenate(out) if out else np.zeros((0, len(self.model.labels)), np.int64)

    def _run(self, images: np.ndarray) -> np.ndarray:
        x = images
        for p in self.layers:
            layer = p.layer
            if layer.kind == CONV_U8:
                centred = 2 * x.astype(np.float32) - 255  # padding below is a centred 0
                pad = layer.pad
                centred = np.pad(centred, ((0, 0), (pad, pad), (pad, pad)))[..., None]
                acc = (_patches(centred, layer.k, layer.stride) @ p.weights).astype(np.int64)
                x = p.pool(p.threshold(acc))
            elif layer.kind == BCONV:
                pad = layer.pad  # packed bit 0 is +1: binary maps are padded with +1
                xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
                x = p.pool(p.threshold(self._binary_acc(p, _patches(xp, layer.k, layer.stride))))
            elif layer.kind == BDENSE:
                x = p.threshold(self._binary_acc(p, x.reshape(len(x), -1)))
            else:
                return self._dense_out(p, x)
        raise AssertionError("model has no output layer")  # read_bnn guarantees one

    @staticmethod
    def _binary_acc(p, packed: np.ndarray) -> np.ndarray:
        """n - 2 * popcount(x XOR w) for every output channel: packed (..., n/8) -> (..., cout)."""
        if HAS_BITWISE_COUNT:
            words = _as_words(packed)
            return p.n - 2 * _popcount_sum(words[..., None, :] ^ p.weights)
        return (_signs(packed, p.n) @ p.weights).astype(np.int64)

    @staticmethod
    def _dense_out(p, x: np.ndarray) -> np.ndarray:
        """The real-valued output layer on packed inputs: exact integer scores."""
        signs = unpack_signs(x.reshape(len(x), -1), p.layer.cin).astype(np.int64)
        return signs @ p.weights + p.bias

    def classify(self, images: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        """(label indices, confidences, real-valued scores) for a batch of model inputs."""
        return self.decide(self.scores(images))

    def decide(self, ints: np.ndarray) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        """(label indices, confidences, real-valued scores) of integer scores."""
        real = ints.astype(np.float64) * self.out_scale
        shifted = real - real.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        best = ints.argmax(axis=1)
        return best, probs[np.arange(len(best)), best], real

    def self_test(self) -> "list[int]":
        """Indices of golden inputs whose scores differ from those stored with the model."""
        h, w = self.model.input_shape
        bad = []
        for i, (image, expected) in enumerate(self.model.golden):
            got = self.scores(np.frombuffer(image, dtype=np.uint8).reshape(1, h, w))[0]
            if list(got) != list(expected):
                bad.append(i)
        return bad


def make_engine(model: BnnModel, threads: int = 1) -> Engine:
    """The native engine where its kernel is built (edge.native), else the numpy engine."""
    from edge import native

    if native.available():
        return native.NativeEngine(model, threads=threads)
    return Engine(model)


def load_engine(path: str, prefix_bytes=None) -> Engine:
    """Read, verify, prepare and self-test a model file; FormatError if it is not a valid model
    or this engine does not reproduce what the host packed.

    A `.bnn` must reproduce its golden scores. A `.pranc` stream is rebuilt here (edge.pranc)
    and must reproduce the host's CRC32 of the packed layers; `prefix_bytes` uses only the
    stream's longest prefix of at most that many bytes that ends on a chunk boundary."""
    from protocol.bnn import read_bnn_file
    from protocol.errors import FormatError

    if _magic(path) == b"BSPR":
        from edge.pranc import read_pranc_file

        model, decoder = read_pranc_file(path, prefix_bytes)
        engine = make_engine(model)
        engine.stream = decoder
        return engine
    if prefix_bytes is not None:
        raise FormatError("%s: --prefix-bytes applies to .pranc streams only" % path)
    engine = make_engine(read_bnn_file(path))
    failed = engine.self_test()
    if failed:
        raise FormatError(
            "%s: failed its self-test on golden inputs %s (this engine does not "
            "compute what the host packed)" % (path, failed)
        )
    return engine


def _magic(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return b""  # the reader reports the error with the path
