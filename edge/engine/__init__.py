"""The engines: run a deployed model (`.bnn`, or a `.pranc` stream rebuilt to one) on 8-bit grey
images with XNOR and popcount, integer-exact.

    base.py          what every engine shares (batching, decide, self-test, describe)
    numpy_engine.py  the numpy engine (runs wherever numpy >= 1.24 does)
    native.py        the C kernel (xnor_kernel.c, built by pip as edge.engine._xnor) via ctypes
    bits.py          bit packing shared with the host packer
    stream.py        `.pranc` streams: seed + alphas -> the packed layers (basis.py: the hash basis)

`load_engine` is the one way in: it reads, rebuilds and self-tests a model file and picks the
native engine where its kernel is built, else numpy. The portable engine (MicroPython) is in
edge.portable.
"""

from edge.engine import native
from edge.engine.base import Engine
from edge.engine.numpy_engine import NumpyEngine
from edge.engine.stream import read_pranc_file
from protocol.bnn import BnnModel, read_bnn_file, read_model_file
from protocol.cascade import read_cascade
from protocol.errors import FormatError
from protocol.kinds import file_kind

__all__ = ["Engine", "NumpyEngine", "load_engine", "make_engine"]


def make_engine(model: BnnModel, threads: int = 1) -> Engine:
    """The native engine where its kernel is built (edge.engine.native), else the numpy one."""
    if native.available():
        return native.NativeEngine(model, threads=threads)
    return NumpyEngine(model)


def load_engine(path: str, prefix_bytes=None) -> Engine:
    """Read, verify, prepare and self-test a model file; FormatError if it is not a valid model
    or this engine does not reproduce what the host packed.

    A `.bnn` must reproduce its golden scores. A `.pranc` stream is rebuilt here (its decoder
    becomes the engine's `source`) and must reproduce the host's CRC32 of the packed layers;
    `prefix_bytes` uses only the stream's longest prefix of at most that many bytes that ends
    on a chunk boundary. A `.bsc` cascade (or its first `prefix_bytes`, which must end on a
    stage) runs its last stage, which must reproduce its golden scores; `engine.stage` is
    (that stage, stages in the stream)."""
    try:
        return _load(path, prefix_bytes)
    except MemoryError:
        raise FormatError("%s: the model does not fit in this device's memory" % path) from None


def _load(path: str, prefix_bytes) -> Engine:
    kind = file_kind(path)
    if kind == "pranc":
        model, decoder = read_pranc_file(path, prefix_bytes)
        engine = make_engine(model)
        engine.source = decoder
        return engine
    stage = None
    if kind == "cascade":
        cascade = read_model_file(path, lambda data: read_cascade(_prefix(data, prefix_bytes)))
        model, stage = cascade.model, cascade.stage
    elif prefix_bytes is not None:
        raise FormatError("%s: --prefix-bytes applies to .pranc and .bsc streams only" % path)
    else:
        model = read_bnn_file(path)
    engine = make_engine(model)
    engine.stage = stage
    failed = engine.self_test()
    if failed:
        raise FormatError(
            "%s: failed its self-test on golden inputs %s (this engine does not "
            "compute what the host packed)" % (path, failed)
        )
    return engine


def _prefix(data: bytes, prefix_bytes) -> bytes:
    if prefix_bytes is None:
        return data
    if not 0 < prefix_bytes <= len(data):
        raise FormatError("a prefix of %d bytes of a %d-byte stream" % (prefix_bytes, len(data)))
    return data[:prefix_bytes]
