"""Classify model inputs with the portable engine; runs under MicroPython and CPython.

    micropython edge/portable/classify.py [--stats] MODEL.bnn|MODEL.bsc IMAGE.pgm|IMAGE.raw ...

One JSON line per image, as `binsort-edge classify` prints them (path, label, confidence,
scores), plus `int_scores`, the exact integers. A `.bsc` cascade (or a prefix of it that ends
on a stage) runs its last stage. `--stats` adds a line with the time per image.
Under MicroPython, tools/micropython.mjs then steps the engine through the first image one
output row at a time, collecting garbage between steps. A last line gives the peak heap in use
(gc.mem_alloc) with the model loaded. This WebAssembly port reclaims memory only between calls
from JavaScript, so the heap is measured between steps, not inside one run. A bad model or
image is one line on stderr and exit status 2. tools/micropython-classify runs this under
MicroPython's WebAssembly port.
"""

import gc
import json
import sys
import time

from edge.portable.engine import PortableEngine, read_pgm
from protocol import cascade
from protocol.bnn import read_bnn
from protocol.errors import BinsortError


def _clock() -> float:
    if hasattr(time, "ticks_us"):
        return time.ticks_us() / 1e6
    return time.perf_counter()


HEAP = {}  # the stepped run that tools/micropython.mjs drives for --stats


def _heap_setup(engine, pixels) -> None:
    HEAP["steps"] = engine.steps(pixels, [])
    HEAP["peak"] = 0
    with open("/heap_steps", "w") as f:
        f.write("1")


def _heap_step() -> None:
    try:
        next(HEAP["steps"])
    except StopIteration:
        with open("/heap_done", "w") as f:
            f.write("1")


def _heap_sample() -> None:
    gc.collect()
    HEAP["peak"] = max(HEAP["peak"], gc.mem_alloc())


def _heap_report() -> None:
    print(json.dumps({"peak_heap_bytes": HEAP["peak"]}))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BinsortError("cannot read %s: %s" % (path, e)) from None


def main(argv: list) -> int:
    stats = "--stats" in argv
    args = [a for a in argv if a != "--stats"]
    if len(args) < 2:
        print("usage: portable_classify [--stats] MODEL.bnn|MODEL.bsc IMAGE...", file=sys.stderr)
        return 2
    data = _read(args[0])
    # a .bsc cascade, whole or a prefix, runs its last stage
    model = cascade.read_cascade(data).model if data[:4] == cascade.MAGIC else read_bnn(data)
    del data
    engine = PortableEngine(model)
    if engine.self_test():
        raise BinsortError("%s: failed its self-test on golden inputs" % args[0])
    labels = model.labels
    h, w = model.input_shape
    started, count, first = _clock(), 0, None
    for path in args[1:]:
        data = _read(path)
        if data[:1] == b"P" and data[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):  # a netpbm file
            pw, ph, pixels = read_pgm(data)
            if (ph, pw) != (h, w):
                raise BinsortError(
                    "%s is %dx%d, the model takes %dx%d (make it with binsort-edge pgm)"
                    % (path, pw, ph, w, h)
                )
        else:
            pixels = data
        first = first or pixels
        ints = engine.scores(pixels)
        best, conf, real = engine.decide(ints)
        row = {
            "path": path,
            "label": labels[best],
            "confidence": round(conf, 6),
            "views": 1,  # each image once; binsort-edge classify --views 1 prints the same
            "scores": {labels[i]: round(real[i], 6) for i in range(len(labels))},
            "int_scores": ints,
        }
        print(json.dumps(row))
        count += 1
    if stats:
        took = _clock() - started
        out = {"images": count, "ms_per_image": round(1000 * took / max(count, 1), 3)}
        print(json.dumps(out))
        if hasattr(gc, "mem_alloc") and first is not None:
            _heap_setup(engine, first)
    return 0


def run(argv: list) -> int:
    try:
        return main(argv)
    except BinsortError as e:
        print("micropython-classify: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
