"""`binsort demo`: the whole host-to-edge story on one machine, on built-in defaults.

Synthesise box-code images, train a binary net, pack it into a `.bnn`, classify the held-out
images with the edge engine and check that the engine computes exactly what the host's reference
of the deployed model computes. Then put it on a simulated line (host.line_demo): ship it over
TCP to an edge daemon on the conveyor simulator, let it sort boxes, and ship a second version
while it runs.
"""

import os
import time

import numpy as np
import torch

from edge.engine import load_engine
from edge.imaging.code_styles import STYLES
from edge.imaging.views import DEFAULT_VIEWS, view_probabilities
from host.archs import arch_spec, synth_code_height, synth_size
from host.config import resolve
from host.evaluate import format_report, load_labelled, summarise
from host.line_demo import run_line
from host.pack import float_state_bytes, pack_model
from host.reference import reference_scores
from host.synth import synthesise
from host.train import load_checkpoint, predictions, train


def run_demo(
    out_dir: str = "demo-out",
    arch: str | None = None,
    count: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    boxes: int = 300,
) -> dict:
    """Run the demo in out_dir and return its report (also printed unless quiet)."""
    say = (lambda *a: None) if quiet else print
    config = resolve(arch=arch, demo=True, epochs=epochs, seed=seed)
    arch, spec = config.arch, arch_spec(config.arch)
    count = count or spec["demo_count"]
    timings = {}
    started = time.time()

    data_dir = os.path.join(out_dir, "data")
    say("1/5 synthesising %d images per label into %s" % (count, data_dir))
    synthesise(
        data_dir,
        count=count,
        size=synth_size(arch),
        seed=seed,
        styles=tuple(STYLES),
        code_height=synth_code_height(arch),
    )
    timings["synth_s"] = round(time.time() - started, 1)

    run_dir = os.path.join(out_dir, "run")
    say("2/5 training %s for %d epochs" % (arch, config.epochs))
    t = time.time()
    train(data_dir, run_dir, config, progress=not quiet, log=say)
    timings["train_s"] = round(time.time() - t, 1)

    say("3/5 packing")
    ckpt, model = load_checkpoint(os.path.join(run_dir, "checkpoint.pt"))
    model_path = os.path.join(out_dir, "model.bnn")
    with open(model_path, "wb") as f:
        f.write(pack_model(ckpt, model))
    model_bytes = os.path.getsize(model_path)
    float_bytes = float_state_bytes(model)

    say("4/5 classifying the held-out images with the edge engine")
    t = time.time()
    engine = load_engine(model_path)
    images, truth = load_labelled(engine, os.path.join(data_dir, "test"))
    view_probs, edge_scores = view_probabilities(engine, images, DEFAULT_VIEWS)
    result = summarise(engine.model.labels, truth, edge_scores)
    views_accuracy = float((view_probs.argmax(axis=1) == truth).mean())
    result["engine"] = engine.name
    timings["edge_eval_s"] = round(time.time() - t, 1)

    # parity on the whole test set: edge engine == host reference of the deployed model, and
    # label agreement with the trained float model
    exact = bool(np.array_equal(edge_scores, reference_scores(engine.model, images)))
    float_pred = predictions(model, torch.from_numpy(images)).numpy()
    agreement = float((float_pred == edge_scores.argmax(1)).mean())

    say("5/5 shipping the model to an edge daemon on the conveyor simulator (%d boxes)" % boxes)
    t = time.time()
    line = run_line(model_path, out_dir, engine.model.labels, boxes, seed + 1)
    timings["line_s"] = round(time.time() - t, 1)

    report = {
        "arch": arch,
        "image_accuracy": result["accuracy"],
        "image_accuracy_views": views_accuracy,
        "views": DEFAULT_VIEWS,
        "boxes": line["boxes"],
        "missed": line["missed"],
        "double": line["double"],
        "spurious": line["spurious"],
        "accuracy": line["accuracy"],
        "sorted_right": line["sorted_right"],
        "lane_right": line["lane_right"],
        "late": line["late"],
        "early": line["early"],
        "wrong_diverter": line["wrong_diverter"],
        "belt_speed_mps": line["belt_speed_mps"],
        "boxes_per_minute": line["boxes_per_minute"],
        "lanes": line["lanes"],
        "latency_ms_p50": line["latency_ms_p50"],
        "latency_ms_p99": line["latency_ms_p99"],
        "transfer_seconds": line["transfer_seconds"],
        "swap_missed": line["swap_missed"],
        "second_version_at_box": line["second_version_at_box"],
        "versions_used": line["versions_used"],
        "n": result["n"],
        "confusion": result["confusion"],
        "labels": result["labels"],
        "model_bytes": model_bytes,
        "float32_bytes": float_bytes,
        "size_ratio": round(float_bytes / model_bytes, 2),
        "edge_equals_host_reference": exact,
        "label_agreement_with_float_model": agreement,
        "model": model_path,
        **timings,
        "total_s": round(time.time() - started, 1),
    }
    say("")
    say(format_report(result))
    say(
        "each test image read as %d shifted and turned views (binsort eval's default): "
        "accuracy %.4f" % (DEFAULT_VIEWS, views_accuracy)
    )
    say(
        "model %s: %d bytes, float32 state dict %d bytes (%.1fx smaller)"
        % (model_path, model_bytes, float_bytes, report["size_ratio"])
    )
    say(
        "edge engine scores equal the host reference on all %d test images: %s"
        % (result["n"], exact)
    )
    say(
        "edge labels agree with the trained float model on %.2f%% of test images"
        % (100 * agreement)
    )
    say("")
    say(
        "line: %d boxes, %d decisions, %d missed, %d double, per-box accuracy %.4f"
        % (line["boxes"], line["decisions"], line["missed"], line["double"], line["accuracy"] or 0)
    )
    say(
        "  belt %.2f m/s, %.0f boxes a minute: %.2f%% sorted right (the lane's diverter on the "
        "box as it passed, no other), %.2f%% decided for the right lane; %d late, %d early, "
        "%d hit by another box's diverter"
        % (
            line["belt_speed_mps"],
            line["boxes_per_minute"],
            100 * line["sorted_right"],
            100 * line["lane_right"],
            line["late"],
            line["early"],
            line["wrong_diverter"],
        )
    )
    for lane, c in sorted(line["lanes"].items()):
        say(
            "  lane %-7s %4d boxes, %5.1f%% decided right" % (lane, c["boxes"], 100 * c["accuracy"])
        )
    say(
        "  per-frame latency p50 %.2f ms, p99 %.2f ms; model %d bytes shipped in %.2f s over TCP"
        % (line["latency_ms_p50"], line["latency_ms_p99"], model_bytes, line["transfer_seconds"])
    )
    say(
        "  version 2 shipped at box %d, swapped in while the belt ran: %d boxes missed at the swap"
        % (line["second_version_at_box"], line["swap_missed"])
    )
    say(
        "time: synth %.0f s, train %.0f s, edge eval %.1f s, line %.0f s, total %.0f s"
        % (
            report["synth_s"],
            report["train_s"],
            report["edge_eval_s"],
            report["line_s"],
            report["total_s"],
        )
    )
    return report
