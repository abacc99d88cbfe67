"""The native engine: every layer but the output one in C (xnor_kernel.c beside this file).

pip builds the kernel as the extension `edge.engine._xnor` where a C compiler works; this module
loads that shared object from this folder with ctypes. Where it is missing (or BINSORT_ENGINE=numpy
is set) the edge uses the numpy engine: `available()` says which, `load_engine` picks, and
`binsort-edge classify --verbose` and the daemon's status name the engine in use. The output layer
stays in numpy (a few thousand integer multiply-adds). `threads` > 1 splits each binary
convolution's rows over that many threads (for the 4-core Zero 2W); the default is one.
"""

import ctypes
import os
from importlib.machinery import EXTENSION_SUFFIXES

import numpy as np

from edge.engine.base import Engine
from protocol.bnn import BCONV, BDENSE, CONV_U8, DENSE_OUT

_LIB = None
_TRIED = False


class LayerSpec(ctypes.Structure):
    """bs_layer in edge/engine/xnor_kernel.c."""

    _fields_ = [
        (name, ctypes.c_int32)
        for name in (
            "kind",
            "k",
            "stride",
            "pad",
            "cin",
            "cout",
            "in_h",
            "in_w",
            "pool",
            "out_h",
            "out_w",
            "reserved",
        )
    ] + [
        ("weights", ctypes.c_void_p),
        ("thresholds", ctypes.c_void_p),
        ("flips", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
    ]


def _load():
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    if os.environ.get("BINSORT_ENGINE", "").lower() == "numpy":
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    names = [os.path.join(here, "_xnor" + suffix) for suffix in EXTENSION_SUFFIXES]
    built = [name for name in names if os.path.exists(name)]
    if not built:
        return None
    try:
        lib = ctypes.CDLL(built[0])
    except OSError:
        return None  # built for another machine or damaged: the numpy engine runs
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.bs_run.argtypes = [p, i, p, i, i, p]
    lib.bs_run.restype = i
    lib.bs_word_bits.restype = i
    lib.bs_layer_size.restype = i
    lib.bs_popcount_peak.argtypes = [p, p, i, i]
    lib.bs_popcount_peak.restype = ctypes.c_uint64
    lib.bs_simd.argtypes = [i]
    lib.bs_simd.restype = i
    if lib.bs_layer_size() != ctypes.sizeof(LayerSpec):
        return None  # a kernel built from other sources: do not guess its layout
    want = os.environ.get("BINSORT_POPCOUNT", "").lower()
    if want and want not in POPCOUNT_PATHS.values():
        want = ""  # an unknown request: the best this CPU has
    lib.bs_simd(0 if want == "scalar" else -1)
    _LIB = lib
    return lib


POPCOUNT_PATHS = {0: "scalar", 2: "avx512-vpopcntq"}


def popcount_path(want: "str | None" = None) -> str:
    """The kernel's popcount path: "scalar" (the compiler builtin, every CPU) or
    "avx512-vpopcntq" (x86-64 CPUs that have it, picked at run time). `want` switches
    ("scalar", or "best"); both give identical results. BINSORT_POPCOUNT=scalar sets it at load."""
    lib = _load()
    if want is not None:
        lib.bs_simd(0 if want == "scalar" else -1)
    return POPCOUNT_PATHS[lib.bs_simd(-2)]


def available() -> bool:
    return _load() is not None


def kernel():
    """The ctypes library (for tools/bench-engines), or None."""
    return _load()


def word_bits() -> int:
    return _load().bs_word_bits()


def padded_rows(rows: np.ndarray, word_bytes: int) -> np.ndarray:
    """(count, bytes) uint8 rows -> the same rows zero-padded to whole words (count, words*size)."""
    count, nbytes = rows.shape
    width = -(-nbytes // word_bytes) * word_bytes
    out = np.zeros((count, width), dtype=np.uint8)
    out[:, :nbytes] = rows
    return out


class NativeEngine(Engine):
    name = "native"

    def describe(self) -> str:
        return "native (%s)" % popcount_path()

    def __init__(self, model, chunk: int = 64, threads: int = 1):
        super().__init__(model, chunk)
        self.lib = _load()
        if self.lib is None:
            raise RuntimeError("the native kernel is not built")
        self.threads = max(1, int(threads))
        word_bytes = word_bits() // 8
        self.keep = []  # arrays the kernel points into
        specs = []
        for layer in model.layers:
            ho, wo = layer.out_shape()
            spec = LayerSpec(**layer.geometry(), out_h=ho, out_w=wo, reserved=0)
            if layer.kind == CONV_U8:
                weights = np.frombuffer(layer.weights, dtype=np.int8).copy()
            elif layer.kind in (BCONV, BDENSE):
                row = layer.weight_bytes() // layer.cout
                raw = np.frombuffer(layer.weights, dtype=np.uint8).reshape(layer.cout, row)
                weights = padded_rows(raw, word_bytes)
            else:
                weights = np.frombuffer(layer.weights, dtype="<i2").astype(np.int16)
                bias = np.frombuffer(layer.bias, dtype="<i4").astype(np.int32)
                spec.bias = bias.ctypes.data
                self.keep.append(bias)
            spec.weights = weights.ctypes.data
            self.keep.append(weights)
            if layer.kind != DENSE_OUT:
                thr = np.frombuffer(layer.thresholds, dtype="<i4").astype(np.int32)
                flips = np.frombuffer(layer.flips, dtype=np.uint8).copy()
                spec.thresholds, spec.flips = thr.ctypes.data, flips.ctypes.data
                self.keep += [thr, flips]
            specs.append(spec)
        self.specs = (LayerSpec * len(specs))(*specs)
        self.classes = model.layers[-1].cout

    def _run(self, images: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(images, dtype=np.uint8)
        scores = np.empty((len(x), self.classes), dtype=np.int64)
        status = self.lib.bs_run(
            ctypes.addressof(self.specs),
            len(self.specs),
            x.ctypes.data,
            len(x),
            self.threads,
            scores.ctypes.data,
        )
        if status != 0:
            raise MemoryError("the native kernel failed (status %d)" % status)
        return scores
