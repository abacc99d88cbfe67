"""binsort-edge: the edge-side command line (no torch)."""

import argparse
import contextlib
import json
import os
import sys

from protocol.errors import BinsortError, run_cli
from protocol.version import show_defaults, version_line

MAX_BENCH_BATCH = 4096  # images a bench batch classifies at once


def _classify(args) -> int:
    from edge.engine import load_engine
    from edge.imaging.imagefolder import image_files
    from edge.imaging.preprocess import load_inputs
    from edge.imaging.views import view_probabilities

    engine = load_engine(args.model)
    if args.verbose:
        print("binsort-edge: engine %s" % engine.describe(), file=sys.stderr)
    labels = engine.model.labels
    paths = image_files(args.paths)
    if not paths:
        raise BinsortError("no images found in %s" % " ".join(args.paths))
    h, w = engine.model.input_shape
    for start in range(0, len(paths), 256):
        batch = paths[start : start + 256]
        probs, int_scores = view_probabilities(engine, load_inputs(batch, h, w), args.views)
        _, _, scores = engine.decide(int_scores)
        for path, p, s, ints in zip(batch, probs, scores, int_scores, strict=True):
            best = int(p.argmax())
            row = {
                "path": path,
                "label": labels[best],
                "confidence": round(float(p[best]), 6),
                "views": args.views,
                "scores": {lb: round(float(v), 6) for lb, v in zip(labels, s, strict=True)},
                "int_scores": [int(v) for v in ints],
            }
            print(json.dumps(row))
    return 0


def _bench(args) -> int:
    from edge.bench import bench, format_bench

    if args.runs < 1 or args.batch < 1:
        raise BinsortError("--runs and --batch must be at least 1")
    if args.batch > MAX_BENCH_BATCH:  # each image is a model input in memory, several times
        raise BinsortError("--batch must be at most %d" % MAX_BENCH_BATCH)
    report = bench(args.model, args.runs, args.batch, args.portable)
    print(json.dumps(report) if args.json else format_bench(report))
    return 0


def _setup(args) -> int:
    from edge.setup import Setup

    steps = Setup(args.root, args.trust or (), start=not args.no_start).run()
    if args.json:
        print(json.dumps({"root": args.root, "steps": steps}))
    else:
        for s in steps:
            print("%-8s %-8s %s" % (s["step"], s["result"], s["what"]))
    return 0


def _store(args) -> int:
    from edge.install.store import DEFAULT_MAX_BYTES, SlotStore

    if args.max_bytes is not None and args.max_bytes < 1:  # 0 was taken as the default
        raise BinsortError("--max-bytes must be at least 1")
    if args.init:
        store = SlotStore.init(args.store, args.trust, args.max_bytes or DEFAULT_MAX_BYTES)
    elif args.trust or args.max_bytes:
        raise BinsortError("--trust and --max-bytes go with --init")
    else:
        store = SlotStore(args.store)
    summary = store.summary()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print("store %s, trusts %s" % (summary["store"], ", ".join(summary["trusted_keys"])))
    for name, rec in sorted(summary["slots"].items()):
        mark = "*" if name == summary["active"] else " "
        if rec is None:
            print("%s slot %s: empty" % (mark, name))
        else:
            part = (
                ""
                if rec["complete"]
                else ", prefix of %d of %d bytes" % (rec["bytes"], rec["size"])
            )
            print(
                "%s slot %s: %s version %d (%s%s) sha256 %s"
                % (
                    mark,
                    name,
                    rec["model_id"],
                    rec["version"],
                    rec["kind"],
                    part,
                    rec["sha256"][:16],
                )
            )
    return 0


def _open_store(args):
    from edge.install.store import SlotStore

    if args.trust:
        return SlotStore.init(args.store, args.trust)
    return SlotStore(args.store)


def _log(quiet: bool):
    def log(line: str) -> None:
        if not quiet:
            print(line, flush=True)

    return log


def _receive(args) -> int:
    from edge.install.receiver import FIRST_FRAME, FIRST_FRAME_MAX, serve_link, serve_listener

    first_frame = FIRST_FRAME if args.first_frame is None else args.first_frame
    if not 0 < first_frame <= FIRST_FRAME_MAX:  # also NaN
        raise BinsortError(
            "--first-frame must be a positive number of seconds, at most %d" % FIRST_FRAME_MAX
        )
    accuracy = args.pranc_min_accuracy
    if accuracy is not None and not 0 <= accuracy <= 1:  # also NaN
        raise BinsortError("--pranc-min-accuracy must be between 0 and 1, not %s" % accuracy)
    store = _open_store(args)
    log = _log(args.quiet)
    store.on_refusal = log  # refusals on the console too (at most 20 lines a minute)
    if args.serial:
        from protocol.transports import serialport

        link = serialport.open_link(args.serial)
        log("receiving on %s into %s" % (args.serial, args.store))
        try:
            results = serve_link(link, store, args.pranc_min_accuracy, log, True, args.once)
        finally:
            link.close()
        return 0 if results or not args.once else 1
    from protocol.transports import tcp

    if "://" in args.listen and not args.listen.startswith("tcp://"):
        raise BinsortError(
            "--listen takes tcp://HOST:PORT or HOST:PORT (use --serial for a serial line)"
        )
    listener = tcp.listen(args.listen)
    log("listening on %s (port %d) into %s" % (args.listen, listener.port, args.store))
    try:
        serve_listener(
            listener,
            store,
            args.pranc_min_accuracy,
            log,
            once=args.once,
            first_frame=first_frame,
        )
        return 0
    finally:
        listener.close()


def _install(args) -> int:
    from edge.install.store import Rejected, SlotStore

    store = SlotStore(args.store)
    try:
        with open(args.manifest, "rb") as f:
            manifest_bytes = f.read()
    except OSError as e:
        raise BinsortError("cannot read manifest %s: %s" % (args.manifest, e.strerror)) from None
    manifest = store.verify(manifest_bytes)
    held = store.held(manifest) is not None
    if args.check_only:
        answer = {"ok": True, "admitted": manifest.model_id, "version": manifest.version}
        print(json.dumps(dict(answer, held=held)))
        return 0
    from_slot = args.payload is None and held
    if from_slot:  # a slot holds these bytes: install from a copy of them
        path, f, _ = store.partial(manifest)
        f.close()
        args.payload, args.move = path, True
    if args.payload is None:
        raise BinsortError(
            "install needs --payload FILE (or --check-only): no slot holds this model's bytes"
        )
    try:
        slot = store.install(manifest, args.payload, move=args.move)
    except Rejected:
        if args.move:  # a payload that fails its hashes is not worth resuming
            with contextlib.suppress(OSError):
                os.remove(args.payload)
        raise
    if from_slot:
        store.drop_partial(manifest)
    result = {"ok": True, "slot": slot, "model_id": manifest.model_id, "version": manifest.version}
    result["kind"] = manifest.kind
    print(json.dumps(result))
    return 0


def _check_max_frames(args) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise BinsortError("--max-frames must be at least 1")


def _run(args) -> int:
    from edge.line.config import load_config
    from edge.line.daemon import run_daemon

    _check_max_frames(args)
    cfg = load_config(args.config)
    daemon = run_daemon(cfg, _log(args.quiet), args.max_frames)
    if args.report:
        with open(args.report, "w") as f:
            json.dump({"status": daemon.status(), "decisions": list(daemon.decisions)}, f)
    if daemon.fault:
        raise BinsortError("%s; the daemon ends to be started again" % daemon.fault)
    return 0


def _capture(args) -> int:
    from edge.line.config import check_capture, load_config
    from edge.line.daemon import watch_and_capture

    _check_max_frames(args)
    cfg = load_config(args.config)
    cap = dict(cfg["capture"] or {"dir": None, "doubt_below": 0.9, "min_free_mb": 100.0})
    cap.update(dir=args.dir, max_mb=args.max_mb, keep=args.keep, full_frame=args.full_frame)
    if args.doubt_below is not None:
        cap["doubt_below"] = args.doubt_below
    check_capture(cap)
    cfg["capture"] = cap
    daemon = watch_and_capture(cfg, _log(args.quiet), args.max_frames)
    summary = daemon.capture.summary()
    print(
        "%d boxes seen, %d captures kept in %s (%d in the ring, %.1f of %.0f MB)"
        % (
            daemon.counters.data["boxes"],
            summary["kept"],
            args.dir,
            summary["captures"],
            summary["bytes"] / 2**20,
            summary["max_bytes"] / 2**20,
        )
    )
    return 0


def _recalibrate(args) -> int:
    from edge.install import recalibration
    from edge.install.store import SlotStore

    store = SlotStore(args.store)
    if args.undo:
        slot = recalibration.undo(store)
        print("slot %s is active again: the model the recalibration was made from" % slot)
        return 0
    if args.frames < 200:
        raise BinsortError("--frames must be at least 200")
    captures = args.captures or os.path.join(args.store, "captures")
    log = None if args.json else _log(False)
    report = recalibration.recalibrate_store(
        store, captures, args.frames, log, install=not args.dry_run
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(
        "re-estimated the thresholds on %d frames (%s) in %.1f s: %.1f%% of their decisions "
        "change"
        % (
            report["frames"],
            ", ".join("%s %d" % kv for kv in report["per_label"].items()),
            report["seconds"],
            100 * report["decisions_changed"],
        )
    )
    if args.dry_run:
        print("dry run: nothing installed")
    else:
        print(
            "installed in slot %s, on trial; `binsort-edge recalibrate --undo` goes back"
            % report["slot"]
        )
    return 0


def _pgm(args) -> int:
    from edge.engine import load_engine
    from edge.files import write_atomic
    from edge.imaging.preprocess import load_inputs
    from edge.portable.engine import write_pgm

    engine = load_engine(args.model)
    h, w = engine.model.input_shape
    pixels = load_inputs([args.image], h, w)[0]
    try:
        write_atomic(args.out, write_pgm(w, h, pixels.tobytes()))
    except OSError as e:
        raise BinsortError("cannot write %s: %s" % (args.out, e.strerror)) from None
    print("wrote %s: the %dx%d model input of %s" % (args.out, w, h, args.image))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from edge.imaging.views import add_views_option

    parser = argparse.ArgumentParser(prog="binsort-edge", description=__doc__)
    parser.add_argument("--version", action="version", version=version_line("binsort-edge"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "setup",
        help="make this machine a sorting station: user, config, store, systemd unit, service; "
        "running it again changes nothing",
    )
    p.add_argument(
        "--trust",
        action="append",
        help="a public key the store trusts (binsort keys new's signing.pub); needed the first "
        "time, repeat to add keys",
    )
    p.add_argument(
        "--root",
        default="/",
        help="set the station up under this folder (a chroot or an image being built): no "
        "users or services are touched",
    )
    p.add_argument("--no-start", action="store_true", help="enable the service, do not start it")
    p.add_argument("--json", action="store_true", help="print the steps as one JSON object")
    p.set_defaults(run=_setup)
    p = sub.add_parser(
        "bench",
        help="time a model on this device per engine and kernel path, with its peak memory",
    )
    p.add_argument("--model", required=True, help="a .bnn, .pranc or .bsc")
    p.add_argument("--runs", type=int, default=50, help="timed single-image runs per engine")
    p.add_argument("--batch", type=int, default=32, help="images in a batch for the throughput")
    p.add_argument("--portable", action="store_true", help="also the pure-Python engine (slow)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_bench)
    p = sub.add_parser("classify", help="classify images with a .bnn model, one JSON line each")
    p.add_argument("--model", required=True, help="a .bnn model or a .pranc stream")
    p.add_argument("paths", nargs="+", help="image files or folders of images")
    p.add_argument("--verbose", action="store_true", help="say which engine runs (stderr)")
    add_views_option(p)
    p.set_defaults(run=_classify)

    p = sub.add_parser(
        "pgm", help="write the model's input for an image as a PGM (for MicroPython)"
    )
    p.add_argument("--model", required=True, help="the .bnn (or .pranc) whose input size to use")
    p.add_argument("image", help="any image file")
    p.add_argument("--out", required=True, help="the .pgm to write")
    p.set_defaults(run=_pgm)

    p = sub.add_parser("store", help="show a model store, or make one with --init")
    p.add_argument("--store", required=True, help="the store folder")
    p.add_argument("--init", action="store_true", help="make the store (or add --trust keys to it)")
    p.add_argument("--trust", action="append", default=[], help="a signing.pub to trust (repeat)")
    p.add_argument("--max-bytes", type=int, default=None, help="largest payload accepted (16 MiB)")
    p.add_argument("--json", action="store_true", help="print the state as one JSON object")
    p.set_defaults(run=_store)

    p = sub.add_parser("receive", help="receive signed models over TCP or a serial line")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", help="tcp://ADDRESS:PORT to listen on")
    where.add_argument("--serial", help="serial:///dev/ttyX?baud=N (any pyserial URL)")
    p.add_argument("--store", required=True, help="the store folder")
    p.add_argument("--trust", action="append", default=[], help="also trust this signing.pub")
    p.add_argument(
        "--pranc-min-accuracy",
        type=float,
        default=None,
        help="install each .pranc prefix whose host-measured accuracy is at least this "
        "(default: only the complete stream)",
    )
    p.add_argument(
        "--first-frame",
        type=float,
        metavar="SECONDS",
        help="a new TCP peer that sends no valid frame within this is let go (default 10)",
    )
    p.add_argument("--once", action="store_true", help="exit after one model is installed")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_receive)

    p = sub.add_parser("install", help="verify and install a manifest + payload (the ssh:// path)")
    p.add_argument("--store", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument(
        "--payload",
        default=None,
        help="the model's bytes (not needed when a slot already holds them: --check-only says)",
    )
    p.add_argument("--check-only", action="store_true", help="only check the manifest")
    p.add_argument("--move", action="store_true", help="move the payload into the slot")
    p.set_defaults(run=_install)

    p = sub.add_parser("run", help="run the sorting daemon (camera -> model -> actuators)")
    p.add_argument("--config", required=True, help="edge.toml (see edge/line/edge.toml)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--report", default=None, help="write the final status and decisions as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run)

    p = sub.add_parser(
        "capture",
        help="watch the line and keep decided boxes for training, without sorting",
        description="Runs the camera, the store's active model and the box tracking of "
        "`run`, and keeps each decided box's model input (and optionally the whole frame) "
        "with its decision in a bounded ring. No actuator moves and no model is received; "
        "stop the daemon first, as both need the camera. `binsort data pull` fetches the "
        "ring. The daemon itself keeps the same ring with a [capture] section in edge.toml.",
    )
    p.add_argument("--config", required=True, help="edge.toml: the store, source and decide")
    p.add_argument("--dir", required=True, help="the capture folder (the ring)")
    p.add_argument(
        "--max-mb", type=float, default=64.0, help="the ring's size; oldest go first (64)"
    )
    p.add_argument(
        "--keep",
        choices=("all", "doubtful"),
        default="all",
        help="every box (default), or only rejected ones and those below --doubt-below",
    )
    p.add_argument("--doubt-below", type=float, default=None, help="doubtful: confidence (0.9)")
    p.add_argument("--full-frame", action="store_true", help="also keep the whole camera frame")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_capture)

    p = sub.add_parser(
        "recalibrate",
        help="re-estimate the active model's thresholds from captured boxes (tier 0)",
        description="Re-estimates every threshold of the store's active model from the "
        "line's own boxes in the capture ring (unlabelled: the light or the camera changed, "
        "not the codes), balanced by decided label, and installs the result in the other slot "
        "on trial, like a shipped model. Needs a model packed with NORM (format 1.2). A "
        "running daemon swaps it in; [recalibrate] in edge.toml does this on a schedule.",
    )
    p.add_argument("--store", required=True, help="the store folder")
    p.add_argument("--captures", default=None, help="the capture ring (default STORE/captures)")
    p.add_argument(
        "--frames", type=int, default=1000, help="frames to use, balanced by label (1000)"
    )
    p.add_argument("--dry-run", action="store_true", help="measure, install nothing")
    p.add_argument("--undo", action="store_true", help="go back to the model it was made from")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=_recalibrate)
    show_defaults(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("binsort-edge", args.run, args)


if __name__ == "__main__":
    sys.exit(main())
