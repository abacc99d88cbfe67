"""The numpy XNOR-popcount engine: runs a `.bnn` model on batches of 8-bit grey images.

Activations between layers are bit-packed along the channel axis (bit 1 = -1, least significant
bit first, so bytes read as little-endian words are the words of docs/format.md). A binary layer
computes each dot product of two +-1 vectors of length n as n - 2 * popcount(a XOR w), compares
it with the layer's integer threshold and writes packed bits; max-pooling then works on the
packed words: a -1 survives only where every input of the window is -1 (AND), except in
channels whose threshold is flipped, where the pooled max of the accumulator is the min of the
bits (OR).
Every number is an integer until the output layer's one float scale.
On numpy >= 2 the popcounts are np.bitwise_count, laid out so that the sum over words adds
whole (pixels, channels) slabs. numpy 1.24 (Raspberry Pi OS bookworm) has no bitwise_count;
there a binary layer is a +-1 float32 matrix product through BLAS instead, exact because every
partial sum is an integer far below 2**24. Measured on numpy 1.24.4 for layers of this network
(tools/bench-engines, docs/engines.md): 3-5x faster than a byte table, 1.1-2.4x faster than
SWAR on uint64.
"""

import numpy as np

from edge.engine.base import Engine
from edge.engine.bits import pack_signs, unpack_signs
from protocol.bnn import BCONV, BDENSE, CONV_U8, DENSE_OUT, BnnModel

HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")


def _signs(packed: np.ndarray, count: int) -> np.ndarray:
    """Packed bits (..., bytes) -> +-1 float32 (..., count) for the BLAS path."""
    bits = np.unpackbits(packed, axis=-1, count=count, bitorder="little")
    return 1.0 - 2.0 * bits.astype(np.float32)


def _word_columns(packed: np.ndarray, words: int) -> np.ndarray:
    """Packed rows (P, bytes) -> (words, P, 1) uint64: zero-padded (+1) to whole 64-bit
    little-endian words, one row of the result per word position."""
    count, nbytes = packed.shape
    if nbytes != 8 * words:
        padded = np.zeros((count, 8 * words), dtype=np.uint8)
        padded[:, :nbytes] = packed
        packed = padded
    return np.ascontiguousarray(np.ascontiguousarray(packed).view("<u8").T)[:, :, None]


def _sum_popcounts(p, x: np.ndarray) -> np.ndarray:
    """(words, P, 1) uint64 patch words against a layer's (words, 1, cout) weights -> (P, cout)
    popcounts of x XOR w, summed over the words."""
    return np.bitwise_count(x ^ p.weights).sum(axis=0, dtype=p.pop_dtype)


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
            if HAS_BITWISE_COUNT:  # (words, 1, cout), see _popcounts
                self.words = -(-self.n // 64)
                self.weights = _word_columns(w, self.words).transpose(0, 2, 1).copy()
            else:
                self.weights = np.ascontiguousarray(_signs(w, self.n).T)  # (n, cout) +-1
        else:
            w = np.frombuffer(layer.weights, dtype="<i2").reshape(cout, cin)
            self.weights = w.astype(np.int64).T.copy()  # (cin, cout)
            self.bias = np.frombuffer(layer.bias, dtype="<i4").astype(np.int64)
        if layer.kind != DENSE_OUT:
            self.thresholds = np.frombuffer(layer.thresholds, dtype="<i4").astype(np.int32)
            # for float32 accumulators (exact integers below 2**24 in magnitude): clipping the
            # thresholds to +-2**25 keeps every comparison and makes them exact in float32
            self.thresholds_f32 = np.clip(self.thresholds, -(2**25), 2**25).astype(np.float32)
            self.flips = np.unpackbits(
                np.frombuffer(layer.flips, dtype=np.uint8), count=cout, bitorder="little"
            ).astype(bool)
            if layer.kind in (BCONV, BDENSE) and HAS_BITWISE_COUNT:
                # acc = n - 2 * pop < T  <=>  pop >= floor((n - T) / 2) + 1: the popcounts
                # are compared as they are (see _popcounts)
                self.pop_dtype = np.int16 if self.n < 2**15 else np.int32
                pop_thr = (self.n - self.thresholds.astype(np.int64)) // 2 + 1
                self.pop_thresholds = pop_thr.clip(-1, self.n + 1).astype(self.pop_dtype)

    def threshold(self, acc: np.ndarray) -> np.ndarray:
        """Integer accumulators (..., cout) -> packed output bits (..., ceil(cout / 8))."""
        thr = self.thresholds_f32 if acc.dtype == np.float32 else self.thresholds
        return pack_signs(_pad_to_bytes((acc < thr) ^ self.flips))

    def threshold_pops(self, pops: np.ndarray) -> np.ndarray:
        """The same bits from popcounts (numpy >= 2): acc < T is pop >= pop_thresholds."""
        return pack_signs(_pad_to_bytes((pops >= self.pop_thresholds) ^ self.flips))

    def pool_acc(self, acc: np.ndarray, pick=np.maximum) -> np.ndarray:
        """p x p stride-p max-pool (floor) of the accumulators (N, H, W, cout), before the
        threshold. Equal to pooling the thresholded bits: max(acc) < T is AND of the bits, and
        in flipped channels its negation is OR. p*p times fewer thresholds to pack. Popcounts
        pool with np.minimum (acc falls as the popcount grows)."""
        p = self.layer.pool
        if p == 1:
            return acc
        h, w = acc.shape[1] // p * p, acc.shape[2] // p * p
        out = acc[:, 0:h:p, 0:w:p]
        for dy in range(p):
            for dx in range(p):
                if dy or dx:
                    out = pick(out, acc[:, dy:h:p, dx:w:p])
        return out


def pad_map(x: np.ndarray, pad: int) -> np.ndarray:
    """(N, H, W, C) -> (N, H + 2 pad, W + 2 pad, C) with zeros around (np.pad is slower)."""
    if not pad:
        return x
    n, h, w, c = x.shape
    out = np.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype)
    out[:, pad : pad + h, pad : pad + w] = x
    return out


def patches(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """(N, H, W, C) padded -> (N, Ho, Wo, k*k*C) sliding windows in (ky, kx, c) order.

    One strided copy per kernel tap, with a pixel's C values moved as one element where they
    fit one (a packed pixel of 2, 4 or 8 bytes is one uint16, uint32 or uint64): several times
    faster than copying a transposed sliding_window_view (docs/engines.md)."""
    n, h, w, c = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    src = np.ascontiguousarray(x)
    size = c * x.itemsize
    if c > 1 and size in (2, 4, 8):
        src = src.view("<u%d" % size)
    out = np.empty((n, ho, wo, k * k, src.shape[-1]), dtype=src.dtype)
    for ky in range(k):
        rows = slice(ky, ky + stride * (ho - 1) + 1, stride)
        for kx in range(k):
            out[:, :, :, ky * k + kx] = src[:, rows, kx : kx + stride * (wo - 1) + 1 : stride]
    return out.view(x.dtype).reshape(n, ho, wo, k * k * c)


class NumpyEngine(Engine):
    """The engine in numpy alone: runs anywhere numpy >= 1.24 does."""

    name = "numpy"

    def __init__(self, model: BnnModel, chunk: int = 64):
        super().__init__(model, chunk)
        self.layers = [_Prepared(layer) for layer in model.layers]

    def _run(self, images: np.ndarray) -> np.ndarray:
        x = images
        for p in self.layers:
            layer = p.layer
            if layer.kind == CONV_U8:
                centred = 2 * x.astype(np.float32)[..., None] - 255
                centred = pad_map(centred, layer.pad)  # padding is a centred 0
                x = p.threshold(p.pool_acc(patches(centred, layer.k, layer.stride) @ p.weights))
            elif layer.kind == BCONV:
                xp = pad_map(x, layer.pad)  # packed bit 0 is +1: padded with +1
                if HAS_BITWISE_COUNT:
                    pops = self._conv_popcounts(p, xp)
                    x = p.threshold_pops(p.pool_acc(pops, np.minimum))
                else:
                    cols = patches(xp, layer.k, layer.stride)
                    x = p.threshold(p.pool_acc(self._binary_acc(p, cols)))
            elif layer.kind == BDENSE:
                flat = x.reshape(len(x), -1)
                if HAS_BITWISE_COUNT:
                    x = p.threshold_pops(self._popcounts(p, flat))
                else:
                    x = p.threshold(self._binary_acc(p, flat))
            else:
                return self._dense_out(p, x)
        raise AssertionError("model has no output layer")  # read_bnn guarantees one

    @staticmethod
    def _conv_popcounts(p, xp: np.ndarray) -> np.ndarray:
        """A binary conv's popcounts (numpy >= 2) from the padded packed map (N, H, W, bytes).
        Pixels of 4 or 8 bytes are copied tap by tap straight into the patches' 64-bit words,
        word position first (one or two taps a word); other widths go through patches."""
        layer = p.layer
        k, stride, nbytes = layer.k, layer.stride, xp.shape[-1]
        if nbytes not in (4, 8):
            return NumpyEngine._popcounts(p, patches(xp, k, stride))
        n, h, w, _ = xp.shape
        ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
        per = 8 // nbytes  # taps in one word
        src = np.ascontiguousarray(xp).view("<u%d" % nbytes)[..., 0]
        words = np.empty((p.words, n, ho, wo, per), dtype=src.dtype)
        for t in range(p.words * per):
            q, j = divmod(t, per)
            if t >= k * k:
                words[q, :, :, :, j] = 0  # zero bits: +1 against the weights' zero padding
                continue
            ky, kx = divmod(t, k)
            rows = slice(ky, ky + stride * (ho - 1) + 1, stride)
            words[q, :, :, :, j] = src[:, rows, kx : kx + stride * (wo - 1) + 1 : stride]
        return _sum_popcounts(p, words.view("<u8").reshape(p.words, -1, 1)).reshape(n, ho, wo, -1)

    @staticmethod
    def _popcounts(p, packed: np.ndarray) -> np.ndarray:
        """popcount(x XOR w) for every output channel (numpy >= 2): packed (..., n/8) ->
        (..., cout). The word position is the outer axis, (words, P, 1) ^ (words, 1, cout), so
        the sum over words adds whole (P, cout) slabs; summing a short last axis instead was
        3-4x slower (docs/engines.md)."""
        pops = _sum_popcounts(p, _word_columns(packed.reshape(-1, packed.shape[-1]), p.words))
        return pops.reshape(packed.shape[:-1] + (pops.shape[-1],))

    @staticmethod
    def _binary_acc(p, packed: np.ndarray) -> np.ndarray:
        """n - 2 * popcount(x XOR w) for every output channel: packed (..., n/8) -> (..., cout),
        as a +-1 float32 product through BLAS (numpy 1.24), exact below 2**24."""
        lead = packed.shape[:-1]
        acc = _signs(packed.reshape(-1, packed.shape[-1]), p.n) @ p.weights
        return acc.reshape(lead + (acc.shape[-1],))

    @staticmethod
    def _dense_out(p, x: np.ndarray) -> np.ndarray:
        """The real-valued output layer on packed inputs: exact integer scores."""
        signs = unpack_signs(x.reshape(len(x), -1), p.layer.cin).astype(np.int64)
        return signs @ p.weights + p.bias
