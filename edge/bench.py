"""`binsort-edge bench --model M`: how fast, and in how much memory, this device runs a model,
per engine and kernel path (like TensorFlow Lite's benchmark_model or LCE's
lce_benchmark_model). The inputs are the model's own seeded self-test images; every engine's
scores are compared with the first engine's, so a fast wrong path cannot hide."""

import resource
import statistics
import sys
import time

import numpy as np

from protocol import bnn
from protocol.errors import BinsortError


def _rss_kib() -> int:
    """Peak resident memory of this process so far (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _inputs(model, count: int) -> np.ndarray:
    h, w = model.input_shape
    return np.stack(
        [
            np.frombuffer(bnn.seeded_input(1000, i, h, w), dtype=np.uint8).reshape(h, w)
            for i in range(count)
        ]
    )


def _timed(run, runs: int, warmup: int = 3) -> list:
    for _ in range(warmup):
        run()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _runs(name: str, eng, images: np.ndarray) -> tuple:
    """(one image, a batch or None, the scores of the first four images) for an engine."""
    if name == "portable":  # one image at a time, as bytes
        got = np.array([eng.scores(im.tobytes()) for im in images[:4]])
        return (lambda: eng.scores(images[0].tobytes())), None, got
    return (lambda: eng.scores(images[:1])), (lambda: eng.scores(images)), eng.scores(images[:4])


def bench(path: str, runs: int = 50, batch: int = 32, portable: bool = False) -> dict:
    from edge.engine import NumpyEngine, load_engine, native

    before = _rss_kib()
    engine = load_engine(path)  # verified and self-tested, as the daemon would load it
    model = engine.model
    images = _inputs(model, max(batch, 1))
    engines = []
    if native.available():
        for want in ("scalar", "best"):
            got = native.popcount_path(want)
            if not any(e[0] == "native (%s)" % got for e in engines):
                engines.append(("native (%s)" % got, native.NativeEngine(model), want))
        native.popcount_path("best")
    engines.append(("numpy", NumpyEngine(model), None))
    if portable:
        from edge.portable.engine import PortableEngine

        engines.append(("portable", PortableEngine(model), None))
    rows, reference = [], None
    for name, eng, want in engines:
        if want is not None:
            native.popcount_path(want)
        one, many, got = _runs(name, eng, images)
        if reference is None:
            reference = got
        elif not np.array_equal(reference, got):
            raise BinsortError("engine %s gives other scores than %s" % (name, rows[0]["engine"]))
        single = _timed(one, runs if name != "portable" else max(1, runs // 25))
        row = {
            "engine": name,
            "ms_per_image": round(statistics.median(single), 3),
            "ms_per_image_p90": round(sorted(single)[int(0.9 * (len(single) - 1))], 3),
            "runs": len(single),
        }
        if many is not None and batch > 1:
            per = _timed(many, max(3, runs // 10))
            row["images_per_s_batched"] = round(batch / (statistics.median(per) / 1000), 1)
        row["peak_rss_mib"] = round(_rss_kib() / 1024, 1)
        rows.append(row)
    if native.available():
        native.popcount_path("best")
    return {
        "model": path,
        "input": "%dx%d" % model.input_shape,
        "layers": len(model.layers),
        "working_bytes_per_image": max(bnn.image_work(layer) for layer in model.layers),
        "rss_before_mib": round(before / 1024, 1),
        "batch": batch,
        "identical_scores": True,
        "engines": rows,
    }


def format_bench(r: dict) -> str:
    lines = [
        "%s: input %s, %d layers, at most %d bytes of working memory an image; scores "
        "identical in every engine"
        % (r["model"], r["input"], r["layers"], r["working_bytes_per_image"])
    ]
    for row in r["engines"]:
        batched = row.get("images_per_s_batched")
        lines.append(
            "  %-26s %8.3f ms an image (p90 %.3f, %d runs)%s; peak RSS %.1f MiB"
            % (
                row["engine"],
                row["ms_per_image"],
                row["ms_per_image_p90"],
                row["runs"],
                ", %.0f images/s in batches of %d" % (batched, r["batch"]) if batched else "",
                row["peak_rss_mib"],
            )
        )
    return "\n".join(lines)
