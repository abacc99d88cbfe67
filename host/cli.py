"""binsort: the host command line (synthesise data, train, pack, evaluate, demo, keys, ship)."""

import argparse
import json
import os
import sys
import time

from host.archs import synth_code_height, synth_size
from host.config import BNN, FINE_TUNE, PRANC, PRECISIONS
from protocol.errors import BinsortError, run_cli
from protocol.sender import GIVE_UP_S
from protocol.version import show_defaults, version_line

# `binsort train --data synth`: 5,000 images a label for 36 epochs read better than 3,000 for 60
# at the same time (13 1/3 minutes on 2 cores; docs/training-notes.md section 5, fourth round)
SYNTH_COUNT = 5000
MAX_SYNTH_SIDE = 1024  # frames are drawn at twice the side: 2048x2048 in float64 is 32 MB


PACK_SUFFIXES = (".bnn", ".pranc", ".bsc", ".bsd")
# a box code: a folder name and a label on the line; "empty" is the class of frames with no code
CODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def check_out_folder(path: str) -> None:
    """An output folder that can be made and written to, checked before any work starts (a
    training run must not find out at its end that it cannot save). Nothing is made here: a
    check after this one may still stop the command, and it leaves no empty folder behind."""
    import tempfile

    if os.path.exists(path) and not os.path.isdir(path):
        raise BinsortError("--out %s is a file, not a folder" % path)
    there = path
    while not os.path.exists(there):  # the folder it would be made in
        there = os.path.dirname(os.path.abspath(there))
    if not os.path.isdir(there):
        raise BinsortError("cannot write to --out %s: %s is a file" % (path, there))
    try:
        with tempfile.TemporaryFile(dir=there):
            pass
    except OSError as e:
        raise BinsortError("cannot write to --out %s: %s" % (path, e.strerror or e)) from None


def check_out_file(path: str, suffixes: tuple) -> None:
    """An output file name with one of `suffixes`, in a folder that exists and can be written."""
    if os.path.isdir(path):
        raise BinsortError(
            "--out %s is a folder: name the file to write, e.g. %s"
            % (path, os.path.join(path, "model" + suffixes[0]))
        )
    if not path.endswith(suffixes):
        raise BinsortError(
            "--out %s: the file name must end in %s (it says what is written)"
            % (path, ", ".join(suffixes))
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BinsortError("cannot write %s: there is no folder %s" % (path, folder))
    if not os.access(folder, os.W_OK):
        raise BinsortError("cannot write %s: the folder %s is not writable" % (path, folder))


def check_codes(text: str) -> list:
    """--codes: distinct box codes, each a plain name of letters, digits, - and _."""
    from edge.imaging.box_images import EMPTY_LABEL

    codes = [c.strip() for c in text.split(",") if c.strip()]
    if not codes:
        raise BinsortError("--codes needs at least one code")
    for code in codes:
        if len(code) > 8 or not all(ch in CODE_CHARS for ch in code):
            raise BinsortError(
                "--codes: %r is not a box code (up to 8 letters, digits, - or _)" % code
            )
        if code.lower() == EMPTY_LABEL:
            raise BinsortError(
                "--codes: %r is the label of frames with no code; it is always made" % code
            )
    twice = sorted({c for c in codes if codes.count(c) > 1})
    if twice:
        raise BinsortError("--codes names %s more than once" % ", ".join(twice))
    return codes


def _synth(args) -> int:
    from tqdm import tqdm

    from host.synth import parse_code_height, parse_styles, synthesise

    styles = parse_styles(args.styles)
    code_height = parse_code_height(args.code_height)
    codes = check_codes(args.codes)
    if args.count < 2:
        raise BinsortError("--count must be at least 2")
    if not 16 <= args.size <= MAX_SYNTH_SIDE:
        raise BinsortError(
            "--size must be 16 to %d pixels (the nets read 64 to 144; a frame is drawn at "
            "twice its side)" % MAX_SYNTH_SIDE
        )
    check_out_folder(args.out)
    total = args.count * (len(codes) + 1)
    bars = not args.quiet and sys.stderr.isatty()  # a log gets the result, not every step
    with tqdm(total=total, desc="synthesising", unit="img", disable=not bars) as bar:
        info = synthesise(
            args.out,
            args.count,
            args.size,
            codes,
            args.seed,
            progress=bar.update,
            styles=styles,
            code_height=code_height,
        )
    print(
        "wrote %d images of %s to %s (styles: %s)"
        % (total, ", ".join(info["labels"]), args.out, ", ".join(styles or ["classic"]))
    )
    args.report = {
        "out": args.out,
        "images": total,
        "labels": info["labels"],
        "styles": list(styles or ["classic"]),
        "code_height": info.get("code_height"),
    }
    return 0


def _pull(args) -> int:
    from host.pull import pull

    opts = {
        "ssh_key": args.ssh_key,
        "known_hosts": args.known_hosts,
        "reconnects": args.reconnects,
        "remove": args.remove,
    }
    c = pull(args.source, args.out, opts, log=(lambda line: None) if args.quiet else print)
    print(
        "pulled %d captures (%d KB) into %s; %d were here already, %d gone from the ring, "
        "%d damaged%s"
        % (
            c["pulled"],
            c["bytes"] >> 10,
            args.out,
            c["already"],
            c["gone"],
            c["damaged"],
            ", %d removed from the device" % c["removed"] if args.remove else "",
        )
    )
    args.report = dict(c, out=args.out)
    return 0


def _styles(args) -> int:
    from edge.imaging.code_styles import STYLES

    for name, paint in STYLES.items():
        print("%-10s %s" % (name, (paint.__doc__ or "").strip().splitlines()[0]))
    return 0


def _data_parts(args) -> list:
    """--data: a folder, or BASE+DIR[,DIR...] (base first, then real folders); 'synth' as a
    part is a synthetic set made in OUT/data (kept there for the next run). Checked, not made."""
    parts = [p.strip() for p in args.data.replace("+", ",").split(",")]
    if not all(parts):
        raise BinsortError("--data %r: an empty folder name" % args.data)
    for part in parts:
        if part != "synth" and not os.path.isdir(part):
            raise BinsortError("no such data folder: %s" % part)
    return parts


def _train_sources(args, parts: list, arch: str) -> list:
    """The data folders of --data, a synthetic set made first where one is asked for, its
    frames drawn at the side the architecture asks for."""
    folders = []
    for part in parts:
        if part == "synth":
            from host.synth import parse_styles, synthesise

            part = os.path.join(args.out, "data")
            if not os.path.exists(os.path.join(part, "labels.json")):
                print("synthesising a data set into %s" % part)
                synthesise(
                    part,
                    args.synth_count,
                    size=synth_size(arch),
                    seed=args.seed,
                    styles=parse_styles(args.styles),
                    code_height=synth_code_height(arch),
                )
        folders.append(part)
    return folders


def check_device(device: str) -> None:
    """--device: auto, cpu, cuda or cuda:N, and a CUDA device only where there is one."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise BinsortError("--device %s: use auto, cpu, cuda or cuda:N" % device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BinsortError(
                "--device %s: this machine's PyTorch (%s) has no CUDA device; use --device cpu "
                "or auto" % (device, torch.__version__)
            )
        if dev.index is not None and dev.index >= count:
            raise BinsortError("--device %s: there are %d CUDA devices" % (device, count))


def _renames(pairs) -> "dict | None":
    """--rename-label OLD=NEW (repeated) -> {OLD: NEW}."""
    out = {}
    for pair in pairs or []:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new or "/" in new or new != new.strip():
            raise BinsortError("--rename-label takes OLD=NEW, e.g. V22=T31: %r" % pair)
        if old in out:
            raise BinsortError("--rename-label names %s twice" % old)
        out[old] = new
    return out or None


def _train(args) -> int:
    from host.config import resolve
    from host.train import load_checkpoint, train

    if args.resume is not None:
        return _resume(args)
    if args.data is None or args.out is None:
        raise BinsortError("train needs --data and --out (or --resume RUN)")
    parts = _data_parts(args)
    if args.real_weight is not None and len(parts) < 2:
        raise BinsortError("--real-weight needs real folders after the base: --data synth+DIR")
    check_device(args.device)
    init = args.init
    if init and os.path.isdir(init):
        init = os.path.join(init, "checkpoint.pt")
    config = resolve(
        arch=args.arch,
        param=args.param,
        init=init,
        init_ckpt=load_checkpoint(init)[0] if init else None,
        mixed=len(parts) > 1,
        pranc=_pranc_options(args),
        epochs=args.epochs,
        teacher_epochs=args.teacher_epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        estimator=args.estimator,
        window=args.window,
        binarize_ramp=args.binarize_ramp,
        seed=args.seed,
        precision=args.precision,
        real_weight=args.real_weight,
        delta_budget=args.delta_budget,
        rename_labels=_renames(args.rename_label),
    )
    check_out_folder(args.out)
    folders = _train_sources(args, parts, config.arch)  # the checks first: synthesis is slow
    metrics = train(
        folders[0] if len(folders) == 1 else folders,
        args.out,
        config,
        device=args.device,
        progress=not args.quiet,
    )
    _trained(args, args.out, metrics)
    return 0


def _resume(args) -> int:
    """train --resume RUN: the run's own data, settings and output folder."""
    from host.config import TrainConfig
    from host.train import read_resume, train

    if any(x is not None for x in (args.data, args.init, args.epochs, args.teacher_epochs)):
        raise BinsortError("--resume RUN goes on with RUN's own --data, --init and --epochs")
    state = read_resume(args.resume)
    check_device(args.device)
    check_out_folder(args.resume)
    missing = [f for f in state["sources"] if not os.path.isdir(f)]
    if missing:
        raise BinsortError("--resume %s: its data folder %s is gone" % (args.resume, missing[0]))
    config = TrainConfig(**state["config"])
    metrics = train(
        state["sources"][0] if len(state["sources"]) == 1 else state["sources"],
        args.resume,
        config,
        device=args.device,
        progress=not args.quiet,
        resume=state,
    )
    _trained(args, args.resume, metrics)
    return 0


def _trained(args, out: str, metrics: dict) -> None:
    args.report = {
        "run": out,
        "checkpoint": os.path.join(out, "checkpoint.pt"),
        "epochs": len(metrics.get("epochs", [])),
        **{
            k: metrics[k]
            for k in ("test_accuracy", "train_seconds", "test_by_source")
            if k in metrics
        },
    }
    if "test_accuracy" in metrics:
        print(
            "test accuracy %.4f after %d epochs (%.0f s); wrote %s"
            % (
                metrics["test_accuracy"],
                len(metrics["epochs"]),  # a delta run adds its second phase's
                metrics["train_seconds"],
                os.path.join(out, "checkpoint.pt"),
            )
        )
        for name, acc in metrics.get("test_by_source", {}).items():
            print("  %.4f on %s" % (acc, name))


def _pranc_options(args) -> dict:
    split = args.alpha_split
    if split is not None and ("," in split or split.isdigit()):
        try:
            split = [int(v) for v in split.split(",")]
        except ValueError:
            raise BinsortError(
                "--alpha-split: %r is not size, sqrt or a list of counts" % split
            ) from None
    opts = {} if split is None else {"split": split}
    for key in ("alphas", "basis", "chunks"):
        value = getattr(args, key)
        if value is not None:
            opts[key] = value
    if args.param != "pranc" and any(
        getattr(args, k) is not None for k in ("alphas", "basis", "chunks", "alpha_split")
    ):
        raise BinsortError("--alphas, --basis, --alpha-split and --chunks need --param pranc")
    if opts.get("alphas", 1) < 1 or opts.get("chunks", 1) < 1:
        raise BinsortError("--alphas and --chunks must be positive")
    return opts


def _pack(args) -> int:
    from protocol.kinds import file_kind

    code = _pack_any(args)
    args.report = {
        "out": args.out,
        "kind": file_kind(args.out),
        "bytes": os.path.getsize(args.out),
        "version": args.version,
    }
    return code


def _pack_any(args) -> int:
    from host.pack import float_state_bytes, pack_model
    from host.train import load_checkpoint

    check_out_file(args.out, PACK_SUFFIXES)
    if args.version < 1:
        raise BinsortError("--version must be at least 1 (a device takes only newer versions)")
    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    ckpt, model = load_checkpoint(path)
    if args.out.endswith(".bsc") or args.first:
        return _pack_cascade(args, path, ckpt, model)
    if args.out.endswith(".bsd") or args.delta_from:
        return _pack_delta(args, path, ckpt, model)
    stream = args.out.endswith(".pranc")
    if args.data is not None and not stream:  # taken silently, a mistyped folder went unseen
        raise BinsortError(
            "--data measures the prefixes of a .pranc, .bsc or .bsd stream; %s is a .bnn, "
            "which has none (drop --data)" % args.out
        )
    if ckpt.get("param", "bnn") == "pranc":
        from host.pack_pranc import pack_pranc, pack_pranc_bnn

        if stream:
            test = _pack_test_data(args, ckpt, model)
            data = pack_pranc(ckpt, model, test, args.version, log=print)
        else:
            data = pack_pranc_bnn(ckpt, model, args.version)
    elif stream:
        raise BinsortError(
            "%s was trained with --param bnn; a .pranc stream needs a run trained with "
            "--param pranc" % path
        )
    else:
        data = pack_model(ckpt, model, args.version)
    _write_atomically(args.out, data)
    if stream:
        _print_stream_sizes(args.out, data, model)
        return 0
    if ckpt.get("param", "bnn") == "pranc":
        from host.models import BinaryNet

        model = BinaryNet(model.arch, model.classes)  # the float32 baseline: the same network
    float_bytes = float_state_bytes(model)
    print(
        "packed %s: %d bytes (float32 state dict %d bytes, %.1fx smaller)"
        % (args.out, len(data), float_bytes, float_bytes / len(data))
    )
    return 0


def _pack_cascade(args, path, ckpt, model) -> int:
    """FIRST (a run or a .bnn) then the run, as a .bsc cascade; each stage's accuracy measured
    through the edge engine on the test images of --data (default: the run's data)."""
    from edge.engine import make_engine
    from host.pack import pack_model
    from protocol.bnn import read_bnn, read_model_file
    from protocol.cascade import write_cascade

    if not args.out.endswith(".bsc") or not args.first:
        raise BinsortError("a cascade is written with --first RUN|FILE.bnn and --out FILE.bsc")
    if ckpt.get("param", "bnn") != "bnn":
        raise BinsortError("%s was trained with --param pranc; a cascade's stages are .bnn" % path)
    stages = [_first_stage(args.first, args.version), pack_model(ckpt, model, args.version)]
    images, labels = _pack_test_data(args, ckpt, model, sizes=True)
    measured = []
    for data in stages:
        m = read_bnn(data)
        if list(m.labels) != list(ckpt["labels"]):
            raise BinsortError(
                "%s has labels %s, the run %s" % (args.first, list(m.labels), ckpt["labels"])
            )
        side = m.input_shape[0]
        got = make_engine(m).classify(images(side))[0]
        measured.append((data, float((got == labels).mean())))
    out = write_cascade(measured)
    _write_atomically(args.out, out)
    read_model_file(args.out, lambda d: None)
    print(
        "packed %s: %d bytes; stage 1 %d bytes (accuracy %.4f), stage 2 %d bytes (accuracy "
        "%.4f) on %d test images"
        % (
            args.out,
            len(out),
            len(stages[0]),
            measured[0][1],
            len(stages[1]),
            measured[1][1],
            len(labels),
        )
    )
    return 0


def _pack_delta(args, path, ckpt, model) -> int:
    """The run as a .bsd delta of the .bnn a device runs: one step with the new thresholds,
    input conv and output layer on the old binary weights (tier 1), then one with the weight
    flips too (tier 2) when the run changed any; each step's accuracy measured through the
    edge engine when test images are at hand."""
    from edge.engine import make_engine
    from host.pack import pack_model, write_with_golden
    from protocol import bnn
    from protocol.delta import write_delta

    if not args.out.endswith(".bsd") or not args.delta_from:
        raise BinsortError("a delta is written with --delta-from OLD.bnn and --out FILE.bsd")
    if ckpt.get("param", "bnn") != "bnn":
        raise BinsortError("%s was trained with --param pranc; a delta updates a .bnn" % path)
    base = bnn.read_model_file(args.delta_from, lambda data: (bnn.read_bnn(data), data)[1])
    old = bnn.read_bnn(base)
    new_bytes = pack_model(ckpt, model, args.version)
    new = bnn.read_bnn(new_bytes)
    if len(old.labels) != len(new.labels):
        raise BinsortError(
            "%s has %d labels, the run %d: a delta cannot change how many (ship a whole model)"
            % (args.delta_from, len(old.labels), len(new.labels))
        )
    for was, now in zip(old.labels, new.labels, strict=True):
        if was != now:
            print(
                "the update renames output %s to %s (configure its lane on the device)" % (was, now)
            )
    if [la.geometry() for la in old.layers] != [la.geometry() for la in new.layers]:
        raise BinsortError(
            "%s is another architecture than the run (%s): a delta needs the same layers; "
            "train with --init from the checkpoint that model was packed from"
            % (args.delta_from, ckpt["arch"])
        )
    binary = (bnn.BCONV, bnn.BDENSE)
    steps = [new_bytes]
    if any(
        a.weights != b.weights
        for a, b in zip(old.layers, new.layers, strict=True)
        if a.kind in binary
    ):
        tier1 = [
            b.replaced(weights=a.weights) if a.kind in binary else b
            for a, b in zip(old.layers, new.layers, strict=True)
        ]
        steps.insert(0, write_with_golden(new.meta, tier1))
    try:
        images, truth = _pack_test_data(args, ckpt, model, sizes=True)
        side = new.input_shape[0]
        x = images(side)
        accs = [float((make_engine(bnn.read_bnn(s)).classify(x)[0] == truth).mean()) for s in steps]
    except BinsortError as e:
        print("not measured: %s" % e)
        accs = [None] * len(steps)
    out = write_delta(base, list(zip(steps, accs, strict=True)))
    _write_atomically(args.out, out)
    flips = sum(
        bin(x ^ y).count("1")
        for a, b in zip(old.layers, new.layers, strict=True)
        if a.kind in binary
        for x, y in zip(a.weights, b.weights, strict=True)
    )
    shown = ["%s" % ("accuracy not measured" if a is None else "accuracy %.4f" % a) for a in accs]
    print(
        "packed %s: %d bytes against the model's %d (%s); %d weight-bit flips; %s"
        % (
            args.out,
            len(out),
            len(new_bytes),
            "tier 1 then tier 2" if len(steps) == 2 else "one step",
            flips,
            ", ".join(shown),
        )
    )
    return 0


def _first_stage(first: str, version: int) -> bytes:
    """The first stage's .bnn: a .bnn file as it is, or a run packed here."""
    from host.pack import pack_model
    from host.train import load_checkpoint
    from protocol.bnn import read_bnn, read_model_file
    from protocol.kinds import file_kind

    if os.path.isfile(first) and file_kind(first) == "bnn":
        return read_model_file(first, lambda data: (read_bnn(data), data)[1])
    path = os.path.join(first, "checkpoint.pt") if os.path.isdir(first) else first
    ckpt, model = load_checkpoint(path)
    if ckpt.get("param", "bnn") != "bnn":
        raise BinsortError("%s was trained with --param pranc; a cascade's stages are .bnn" % path)
    return pack_model(ckpt, model, version)


def _pack_test_data(args, ckpt, model, sizes=False):
    """The test images each prefix's accuracy is measured on: --data, else the run's data."""
    from edge.imaging.imagefolder import dataset_splits
    from edge.imaging.preprocess import load_inputs

    data = args.data or ckpt.get("data")
    if not data or not os.path.isdir(data):
        raise BinsortError(
            "no data folder to measure the stream's prefixes on (%s); give --data DIR" % data
        )
    labels, _, test_items = dataset_splits(data)
    if list(labels) != list(ckpt["labels"]):
        raise BinsortError("%s has labels %s, the run has %s" % (data, labels, ckpt["labels"]))
    import numpy as np

    from host.models import arch_spec

    truth = np.array([lb for _, lb in test_items], dtype=np.int64)
    if sizes:  # a function of the input side: each stage of a cascade reads its own size
        return (lambda side: load_inputs([p for p, _ in test_items], side, side)), truth
    side = arch_spec(ckpt["arch"])["input"]
    return load_inputs([p for p, _ in test_items], side, side), truth


def _print_stream_sizes(path, data, model) -> None:
    from host.models import BinaryNet
    from host.pack import float_state_bytes

    alpha_bytes = 2 * sum(model.ks)
    float_bytes = float_state_bytes(BinaryNet(model.arch, model.classes))
    print(
        "packed %s: %d bytes in all, %d bytes of alphas (%d alphas in %d chunks), %d bytes "
        "fixed part and framing; float32 state dict %d bytes (%.0fx the alphas)"
        % (
            path,
            len(data),
            alpha_bytes,
            sum(model.ks),
            model.chunks,
            len(data) - alpha_bytes,
            float_bytes,
            float_bytes / alpha_bytes,
        )
    )


def _write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name, fsync, rename: a crash never leaves half a model at `path`."""
    from edge.files import write_atomic

    try:
        write_atomic(path, data)
    except OSError as e:
        raise BinsortError("cannot write %s: %s" % (path, e)) from None


def _inspect(args) -> int:
    from host.inspect_model import format_report, inspect_model

    report = inspect_model(args.model)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _eval(args) -> int:
    from host.evaluate import evaluate, format_report

    train, test = os.path.join(args.data, "train"), os.path.join(args.data, "test")
    if os.path.isdir(train) and os.path.isdir(test):
        raise BinsortError(
            "%s holds a data set's train/ and test/ splits: evaluate on the images no model was "
            "trained on with --data %s" % (args.data, test)
        )
    result = evaluate(args.model, args.data, args.prefix_bytes, args.views)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _demo(args) -> int:
    from host.demo import run_demo

    if args.boxes < 3:
        raise BinsortError("--boxes must be at least 3")
    if args.count is not None and args.count < 2:  # 0 was taken as "the default" unsaid
        raise BinsortError("--count must be at least 2")
    report = run_demo(
        args.out, args.arch, args.count, args.epochs, args.seed, quiet=args.json, boxes=args.boxes
    )
    if args.json:
        print(json.dumps(report))
    return 0


def _keys_new(args) -> int:
    from protocol.signing import key_id, new_key_pair, read_public

    key_path, pub_path = new_key_pair(args.out, args.comment)
    kid = key_id(read_public(pub_path))
    print("wrote %s (private, mode 0600) and %s (key id %s)" % (key_path, pub_path, kid))
    args.report = {"key": key_path, "public": pub_path, "key_id": kid}
    print("provision a device with: binsort-edge store --store DIR --init --trust %s" % pub_path)
    return 0


def _ship(args) -> int:
    from tqdm import tqdm

    from host.ship import ship

    if not args.give_up > 0:  # also NaN
        raise BinsortError("--give-up must be a positive number of seconds, not %s" % args.give_up)
    if args.fleet is None and (args.canary or args.max_failures is not None):
        raise BinsortError("--canary and --max-failures are for --fleet INVENTORY")
    history = _history_path(args)
    if args.fleet is not None:
        return _ship_fleet(args, _ship_options(args))

    bar = tqdm(
        total=None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="shipping",
        disable=args.quiet or not sys.stderr.isatty(),
    )
    started = time.monotonic()

    def progress(acked, size):
        if bar.total != size:
            bar.reset(total=size)
            bar.update(acked)
        elif acked > bar.n:
            bar.update(acked - bar.n)

    def status(info):
        if "installed" in info:
            bar.write(
                "device installed the first %d bytes (host accuracy %.4f) in slot %s"
                % (info["installed"], info.get("accuracy") or 0.0, info.get("slot"))
            )

    def reconnect(count, why):
        bar.write("link lost (%s); reconnecting (%d)" % (why, count))

    options = _ship_options(args)
    options.update(progress=progress, status=status, on_reconnect=reconnect)
    try:
        result = ship(args.model, args.to, args.key, options)
    finally:
        bar.close()
    from host.fleet import new_entry, record

    entry = new_entry(
        "rollback" if args.rollback else "ship",
        model=os.path.abspath(args.model),
        model_id=result["model_id"],
        version=result["version"],
        signed=result.pop("signed", None),
        devices={args.to: {"ok": True, "slot": result.get("slot")}},
    )
    record(history, entry, sys.stderr)
    what = "rolled back to" if args.rollback else "installed"
    print(
        "%s %s version %d in slot %s on %s (%.1f s)"
        % (
            what,
            result["model_id"],
            result["version"],
            result["slot"],
            args.to,
            time.monotonic() - started,
        )
    )
    args.report = dict(result, to=args.to, seconds=round(time.monotonic() - started, 2))
    return 0


def _inventory_option(p) -> None:
    p.add_argument(
        "-i",
        "--inventory",
        "--fleet",
        dest="fleet",
        default=None,
        metavar="INVENTORY",
        help="an Ansible inventory (default: $BINSORT_INVENTORY)",
    )


def _fleet_options(p, group: "str | None" = "all") -> None:
    """What every command that works on several devices takes."""
    p.add_argument(
        "--group",
        default=group,
        help="the inventory group (default %s)" % (group or "none: name a device or a group"),
    )
    p.add_argument("--parallel", type=int, default=4, help="devices served at once (default 4)")
    _history_option(p)


def _history_option(p) -> None:
    p.add_argument(
        "--history",
        default=None,
        help="the deployment history file (default $XDG_STATE_HOME/binsort/deployments.jsonl)",
    )


def _fleet_devices(args, group=None, name=None) -> list:
    """The devices a command works on, every one's URLs checked before any work."""
    from host.inventory import default_inventory, read_inventory
    from protocol.transports import transport

    path = args.fleet or default_inventory()
    if path is None:
        raise BinsortError("which devices? give -i INVENTORY (or set BINSORT_INVENTORY)")
    inventory = read_inventory(path)
    devices = [inventory.device(name)] if name else inventory.devices(group or "all")
    for d in devices:
        try:
            transport(d.url).parse(d.url)
        except BinsortError as e:
            raise BinsortError("%s: binsort_url %s" % (d.name, e)) from None
        if not d.status.startswith("http://"):
            raise BinsortError("%s: binsort_status %s is not http://HOST:PORT" % (d.name, d.status))
    if getattr(args, "parallel", 1) < 1:
        raise BinsortError("--parallel must be at least 1")
    return devices


def _history_path(args) -> str:
    from host.fleet import default_history

    path = args.history or default_history()
    if os.path.isdir(path):
        raise BinsortError("--history %s is a folder: name the history file" % path)
    return path


def _ship_fleet(args, options: dict) -> int:
    from host import fleet

    if args.canary < 0 or not args.watch >= 0:
        raise BinsortError("--canary and --watch must not be negative")
    if args.max_failures is not None and args.max_failures < 1:
        raise BinsortError("--max-failures must be at least 1")
    if args.max_reject_rate is not None and not 0 <= args.max_reject_rate <= 1:
        raise BinsortError("--max-reject-rate is a fraction between 0 and 1")
    devices = _fleet_devices(args, args.group)
    if args.canary >= len(devices):
        raise BinsortError(
            "--canary %d leaves no device after the canary (the fleet has %d)"
            % (args.canary, len(devices))
        )
    plan = {
        "canary": args.canary,
        "watch": args.watch,
        "parallel": args.parallel,
        "max_failures": args.max_failures,
        "max_reject": args.max_reject_rate,
        "quiet": args.quiet,
        "history": _history_path(args),
    }
    entry = fleet.rollout(devices, args.model, args.key, options, plan, sys.stderr)
    args.report = entry
    line = fleet.summary(entry)
    if entry["failed"]:
        for name in entry["failed"]:
            r = entry["devices"][name]
            if not r.get("skipped"):
                print("%s: %s" % (name, r["error"]), file=sys.stderr)
        raise BinsortError(line)
    print(line)
    return 0


def _fleet_status(args) -> int:
    from host import fleet

    rows = fleet.fleet_status(_fleet_devices(args, args.group), args.parallel)
    args.report = {"devices": rows}
    print(fleet.format_status(rows))
    return 0


def _fleet_logs(args) -> int:
    from host import fleet

    if args.lines < 0:
        raise BinsortError("--lines must not be negative")
    (device,) = _fleet_devices(args, name=args.device)
    log = fleet.device_logs(device, args.lines)
    args.report = log
    print(fleet.format_logs(log))
    return 0


def _fleet_rollback(args) -> int:
    from host import fleet

    if (args.device is None) == (args.group is None):
        raise BinsortError("name one device or one --group to roll back (--group all: every one)")
    if not args.give_up > 0:
        raise BinsortError("--give-up must be a positive number of seconds")
    devices = _fleet_devices(args, args.group, args.device)
    from protocol.signing import load_private

    load_private(args.key)  # a wrong key file fails before any device is asked
    options = _link_options(args)
    options["expires_hours"] = args.expires_hours
    plan = {"parallel": args.parallel, "quiet": args.quiet, "history": _history_path(args)}
    entry = fleet.rollback(devices, args.key, options, plan, sys.stderr)
    args.report = entry
    done = [n for n, r in entry["devices"].items() if r["ok"]]
    line = "rolled back %d of %d devices" % (len(done), len(devices))
    if entry["failed"]:
        for name in entry["failed"]:
            print("%s: %s" % (name, entry["devices"][name]["error"]), file=sys.stderr)
        raise BinsortError(line + "; failed: " + ", ".join(entry["failed"]))
    print(line)
    return 0


def _fleet_history(args) -> int:
    from host import fleet

    if args.last < 1:
        raise BinsortError("--last must be at least 1")
    entries = fleet.read_history(_history_path(args))[-args.last :]
    args.report = {"deployments": entries}
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(e.get("at", 0)))
        results = e.get("devices") or {}
        ok = sum(1 for r in results.values() if isinstance(r, dict) and r.get("ok"))
        what = e.get("action", "?")
        model = "%s v%s" % (e.get("model_id"), e.get("version")) if e.get("model_id") else ""
        print(
            "%s  %s  %-8s %s  %d/%d ok%s"
            % (
                e.get("id", "?"),
                when,
                what,
                model,
                ok,
                len(results),
                "; stopped: %s" % e["stopped"] if e.get("stopped") else "",
            )
        )
    if not entries:
        print("no deployments yet")
    return 0


def _link_options(args) -> dict:
    """How to reach devices: what ship and fleet rollback take alike."""
    return {
        "reconnects": args.reconnects,
        "give_up": args.give_up,
        "ssh_key": args.ssh_key,
        "known_hosts": args.known_hosts,
        "remote_command": args.remote_command,
    }


def _ship_options(args) -> dict:
    return dict(
        _link_options(args),
        version=args.version,
        model_id=args.model_id,
        rollback=args.rollback,
        store_id=args.store_id,
        expires_hours=args.expires_hours,
    )


def _reports(p, run) -> None:
    """A command whose result --json prints as one object (see _run)."""
    p.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object on stdout (other lines go to stderr)",
    )
    p.set_defaults(run=run, report=None)


def build_parser() -> argparse.ArgumentParser:
    from edge.imaging.views import add_views_option

    parser = argparse.ArgumentParser(prog="binsort", description=__doc__)
    parser.add_argument("--version", action="version", version=version_line("binsort"))
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data sets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("synth", help="synthesise box-code images")
    p.add_argument("--out", required=True, help="folder to write train/, test/ and labels.json")
    p.add_argument("--count", type=int, default=3000, help="images per label (default 3000)")
    p.add_argument("--size", type=int, default=100, help="image side in pixels (default 100)")
    p.add_argument("--codes", default="F06,K11,S19,V22", help="comma-separated box codes")
    p.add_argument(
        "--styles",
        default="all",
        help="draw codes in these styles on boxes of any size and place: all (default), a list "
        "(label,stamp) or all but some (-stencil); `binsort data styles` lists them. classic: "
        "the first generator's carton-printed codes near the centre, which read no other boxes",
    )
    p.add_argument(
        "--code-height",
        default=None,
        metavar="LOW-HIGH",
        help="styled codes' heights, as shares of the frame's, drawn per octave from this band "
        "(default 8-35; 10-35 for a 96x96 net, which cannot read smaller ones); in labels.json",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _reports(p, _synth)
    p = data.add_parser(
        "pull",
        help="fetch a device's captures into a folder sorted by predicted label",
        description="Fetches the capture ring of a device over SFTP (host key pinned in "
        "known_hosts, as for ship) into OUT/<predicted label>/. Correct a label by moving the "
        "image to another folder; a later pull never brings a capture back. Resumable.",
    )
    p.add_argument("source", help="ssh://USER@HOST[:PORT]/STORE (or the capture folder)")
    p.add_argument("--out", required=True, help="the image folder to fill")
    p.add_argument("--ssh-key", default=None, help="private key (default: ~/.ssh keys)")
    p.add_argument("--known-hosts", default=None, help="host keys (default ~/.ssh/known_hosts)")
    p.add_argument(
        "--reconnects", type=int, default=5, help="reconnects in a row with no progress (5)"
    )
    p.add_argument(
        "--remove", action="store_true", help="delete each capture on the device once it is here"
    )
    p.add_argument("--quiet", action="store_true")
    _reports(p, _pull)
    p = data.add_parser("styles", help="list the code styles `data synth --styles` takes")
    p.set_defaults(run=_styles)

    p = sub.add_parser("train", help="train a binary net, or fine-tune one (--init)")
    p.add_argument(
        "--data",
        default=None,
        help="a data folder, 'synth' for a fresh synthetic set, or BASE+DIR[,DIR...]: a base "
        "set (synth or a folder) mixed with folders of real images (one sub-folder per label)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="go on with a run that was stopped, from its last whole epoch (RUN/resume.pt, "
        "written after every epoch), with its own data and settings",
    )
    p.add_argument(
        "--init",
        default=None,
        help="fine-tune this RUN/checkpoint.pt: its architecture and labels are kept "
        "(defaults then: %d epochs, --lr %g, no binarisation ramp)"
        % (FINE_TUNE["epochs"], FINE_TUNE["lr"]),
    )
    p.add_argument(
        "--rename-label",
        action="append",
        default=None,
        metavar="OLD=NEW",
        help="with --init: a new box code takes an old one's output (repeatable); the data "
        "then has a folder NEW, not OLD",
    )
    p.add_argument(
        "--delta-budget",
        type=int,
        default=None,
        help="with --init: an update that fits BYTES as a .bsd delta of that model (tier 1: "
        "thresholds, input conv, output layer; then the firmest weight flips that fit); "
        "pack it with binsort pack RUN --delta-from OLD.bnn --out UPDATE.bsd",
    )
    p.add_argument(
        "--real-weight",
        type=float,
        default=None,
        help="share of each epoch drawn from the real folders after the base (0-1; default: "
        "in proportion to their images, or %g with --init)" % FINE_TUNE["real_weight"],
    )
    p.add_argument(
        "--synth-count",
        type=int,
        default=SYNTH_COUNT,
        help="synth: images per label (%d)" % SYNTH_COUNT,
    )
    p.add_argument("--styles", default="all", help="synth: code styles (all; see data styles)")
    p.add_argument(
        "--arch",
        default=None,
        help="architecture (host/models.py: the default, bcnn, tiny); --init: the checkpoint's",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the architecture's own")
    p.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help="epochs of the real-valued twin that starts the binary net and teaches it by "
        "distillation, before --epochs of the binary net (default: the architecture's own; "
        "0: none)",
    )
    p.add_argument(
        "--out", default=None, help="run folder for checkpoint.pt, metrics.json, curves.png"
    )
    p.add_argument("--batch-size", type=int, default=None, help="default %d" % BNN["batch_size"])
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate (default %g; %g with --init)" % (BNN["lr"], FINE_TUNE["lr"]),
    )
    p.add_argument(
        "--estimator",
        choices=("ste", "approx"),
        default=None,
        help="gradient of sign: approx-sign or straight-through (default %s; --init: the "
        "checkpoint's)" % BNN["estimator"],
    )
    p.add_argument(
        "--window",
        type=float,
        default=None,
        help="STE window: gradient passes where |x| <= window (default %g)" % BNN["window"],
    )
    p.add_argument(
        "--binarize-ramp",
        type=float,
        default=None,
        help="fraction of training over which activations (and PRANC weights) go from clamp to "
        "sign (default %g; %g with --param pranc, %g with --init)"
        % (BNN["binarize_ramp"], PRANC["binarize_ramp"], FINE_TUNE["binarize_ramp"]),
    )
    p.add_argument(
        "--param",
        choices=("bnn", "pranc"),
        default="bnn",
        help="train the weights (bnn, default) or PRANC alphas of a hash-drawn basis (pranc)",
    )
    p.add_argument(
        "--alphas",
        type=int,
        default=None,
        help="pranc: alphas in all (default %d)" % PRANC["alphas"],
    )
    p.add_argument(
        "--basis",
        choices=("fastfood", "dense"),
        default=None,
        help="pranc: structured fastfood basis (default) or the paper's dense Rademacher basis",
    )
    p.add_argument(
        "--alpha-split",
        default=None,
        help="pranc: alphas per layer in proportion to the square root of its size (sqrt, "
        "default), to its size (size), or a comma-separated count per layer",
    )
    p.add_argument(
        "--chunks",
        type=int,
        default=None,
        help="pranc: stream chunks (default %d)" % PRANC["chunks"],
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="arithmetic of the training steps' forward pass: bf16 (bfloat16 autocast; weights "
        "and optimiser stay float32), fp32, or auto: bf16 where the device has it in hardware, "
        "fp32 for --param pranc (default %s)" % BNN["precision"],
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _reports(p, _train)

    p = sub.add_parser(
        "pack", help="pack a trained run into a .bnn file, a .pranc stream or a .bsc cascade"
    )
    p.add_argument("checkpoint", help="RUN/checkpoint.pt (or the RUN folder)")
    p.add_argument(
        "--out",
        required=True,
        help="the .bnn file, a .pranc stream (runs trained as pranc), or a .bsc cascade "
        "(with --first)",
    )
    p.add_argument(
        "--first",
        default=None,
        help=".bsc: the small first stage, a run or a .bnn, sent before this run's model",
    )
    p.add_argument(
        "--delta-from",
        default=None,
        help=".bsd: the .bnn the device runs now; the delta updates it to this run's model",
    )
    p.add_argument(
        "--data",
        default=None,
        help=".pranc, .bsc and .bsd: data folder whose test images every prefix is measured on "
        "(default: the run's own data)",
    )
    p.add_argument("--version", type=int, default=1, help="monotonic model version (default 1)")
    _reports(p, _pack)

    p = sub.add_parser(
        "inspect",
        help="what a .bnn, .bsc, .bsd or .pranc holds: labels, input, version, layers, sizes, "
        "the host's accuracy, the self-test",
    )
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_inspect)

    p = sub.add_parser(
        "eval", help="accuracy and confusion of a .bnn, .pranc or .bsc through the edge engine"
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a folder of label sub-folders, e.g. DATA/test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--prefix-bytes",
        type=int,
        default=None,
        help="for a .pranc stream: its longest prefix of at most N bytes that ends on a chunk; "
        "for a .bsc cascade: its first N bytes, which must end on a stage",
    )
    add_views_option(p)
    p.set_defaults(run=_eval)

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("new", help="make an Ed25519 key pair: DIR/signing.key and DIR/signing.pub")
    p.add_argument("--out", required=True, help="folder for the key pair")
    p.add_argument("--comment", default="", help="a note stored in the public key line")
    _reports(p, _keys_new)

    p = sub.add_parser("ship", help="sign a model and send it to a device; exits 0 once installed")
    p.add_argument("model", help="a .bnn file or a .pranc stream")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to",
        help="tcp://HOST:PORT, serial:///dev/ttyX?baud=N or ssh://USER@HOST[:PORT]/STORE_DIR",
    )
    where.add_argument(
        "--fleet",
        metavar="INVENTORY",
        help="ship to every device of an Ansible inventory (INI or YAML; binsort_url and "
        "binsort_status host variables, default tcp://HOST:7600 and http://HOST:8080)",
    )
    p.add_argument("--key", required=True, help="the signing.key made by `binsort keys new`")
    p.add_argument(
        "--version", type=int, default=None, help="model version (default: now, in unix seconds)"
    )
    p.add_argument("--model-id", default=None, help="model name (default: the file name)")
    p.add_argument(
        "--rollback",
        action="store_true",
        help="sign a rollback to an older version (it expires: 24 h, or --expires-hours)",
    )
    p.add_argument(
        "--expires-hours",
        type=float,
        default=None,
        help="the device refuses the manifest this many hours after signing (default: never; "
        "24 for --rollback)",
    )
    p.add_argument(
        "--store-id",
        default=None,
        help="bind the manifest to one device's store (its id: binsort-edge store --json)",
    )
    p.add_argument(
        "--reconnects",
        type=int,
        default=20,
        help="reconnects in a row that make no progress before giving up (default 20)",
    )
    p.add_argument(
        "--give-up",
        type=float,
        default=GIVE_UP_S,
        metavar="SECONDS",
        help="tcp://, serial://: stop when no intact frame has come back from the device for "
        "this long, and say what the link does (default %g); what arrived stays resumable"
        % GIVE_UP_S,
    )
    p.add_argument("--ssh-key", default=None, help="ssh:// private key (default: ~/.ssh keys)")
    p.add_argument(
        "--known-hosts", default=None, help="ssh:// host keys (default ~/.ssh/known_hosts)"
    )
    p.add_argument(
        "--remote-command", default="binsort-edge", help="ssh:// the device's binsort-edge"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _fleet_options(p)
    p.add_argument(
        "--canary",
        type=int,
        default=0,
        metavar="N",
        help="--fleet: ship to the first N devices, watch them, then to the rest (default 0)",
    )
    p.add_argument(
        "--watch",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="--canary: how long to read the canaries' status before going on (default 60)",
    )
    p.add_argument(
        "--max-reject-rate",
        type=float,
        default=None,
        metavar="FRACTION",
        help="--canary: a canary that rejects more of the boxes in the watch fails "
        "(default: each device's own reject_alarm)",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=None,
        metavar="N",
        help="--fleet: start no more devices once N have failed (default: try every device)",
    )
    _reports(p, _ship)

    fleet = sub.add_parser("fleet", help="the devices of an inventory").add_subparsers(
        dest="fleet_command", required=True
    )
    p = fleet.add_parser("status", help="every device's status endpoint in one table")
    _inventory_option(p)
    _fleet_options(p)
    _reports(p, _fleet_status)
    p = fleet.add_parser("logs", help="a device's recent daemon and store log")
    p.add_argument("device", help="the device's name in the inventory")
    _inventory_option(p)
    p.add_argument("--lines", type=int, default=100, help="lines of each log (default 100)")
    _reports(p, _fleet_logs)
    p = fleet.add_parser(
        "rollback",
        help="swap devices back to the model in their other slot (signed; no old file needed)",
    )
    p.add_argument("device", nargs="?", default=None, help="a device (or --group)")
    _inventory_option(p)
    p.add_argument("--key", required=True, help="the signing.key the devices trust")
    p.add_argument(
        "--expires-hours",
        type=float,
        default=None,
        help="the rollback is refused this many hours after signing (default 24)",
    )
    p.add_argument("--reconnects", type=int, default=20, help="reconnects without progress (20)")
    p.add_argument("--give-up", type=float, default=GIVE_UP_S, metavar="SECONDS")
    p.add_argument("--ssh-key", default=None, help="ssh:// private key (default: ~/.ssh keys)")
    p.add_argument("--known-hosts", default=None, help="ssh:// host keys")
    p.add_argument("--remote-command", default="binsort-edge", help="ssh:// binsort-edge")
    p.add_argument("--quiet", action="store_true", help="no lines per device")
    _fleet_options(p, group=None)
    _reports(p, _fleet_rollback)
    p = fleet.add_parser("history", help="the deployments this host made, newest last")
    _history_option(p)
    p.add_argument("--last", type=int, default=20, help="how many (default 20)")
    _reports(p, _fleet_history)

    p = sub.add_parser("demo", help="synthesise, train, pack and evaluate on the edge engine")
    p.add_argument("--out", default="demo-out", help="working folder (default ./demo-out)")
    p.add_argument("--arch", default=None, help="architecture (default: the demo's own)")
    p.add_argument("--count", type=int, default=None, help="images per label")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--boxes", type=int, default=300, help="boxes on the simulated line (300)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=_demo)
    show_defaults(parser)
    return parser


def _run(args) -> int:
    """A command; with --json where the command has a report, its lines go to stderr and the
    report is the one thing on stdout."""
    if not (getattr(args, "json", False) and "report" in vars(args)):
        return args.run(args)
    import contextlib

    try:
        with contextlib.redirect_stdout(sys.stderr):
            return args.run(args)
    finally:  # a command that fails after its work (a fleet with a failed device) reports too
        if args.report is not None:
            print(json.dumps(args.report))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("binsort", _run, args)


if __name__ == "__main__":
    sys.exit(main())
