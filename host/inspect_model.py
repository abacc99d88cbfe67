"""`binsort inspect MODEL`: what a model file holds, read through the formats' own checks."""

import datetime
import hashlib
import struct

from protocol import bnn, cascade, delta
from protocol.errors import BinsortError, FormatError
from protocol.foreign import wrong_magic
from protocol.kinds import model_kind

# a model version this large is a time (binsort ship's default version is now, in unix seconds)
_VERSION_IS_A_TIME = 1_000_000_000


def _when(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _sections(data: bytes) -> list:
    """[(tag, bytes on disk)] of a verified `.bnn`, headers and CRCs included."""
    at, out = struct.calcsize(bnn._HEADER), []
    sn = struct.calcsize(bnn._SECTION)
    while at < len(data):
        tag, length = struct.unpack_from(bnn._SECTION, data, at)
        out.append((tag.decode("ascii", "replace"), sn + length + 4))
        at += sn + length + 4
    return out


def _bnn_report(model: bnn.BnnModel, data: bytes) -> dict:
    meta = model.meta
    metrics = meta.get("metrics") or {}
    version = meta.get("version")
    layers = []
    for layer in model.layers:
        row = {
            "kind": bnn.KIND_NAMES[layer.kind],
            "in": "%dx%dx%d" % (layer.in_h, layer.in_w, layer.cin),
            "out": "%dx%dx%d" % (*layer.out_shape(), layer.cout),
            "k": layer.k,
            "stride": layer.stride,
            "pool": layer.pool,
            "weight_bytes": layer.weight_bytes(),
            "norm": layer.norm is not None,
        }
        layers.append(row)
    sizes = {}
    for tag, size in _sections(data) if data is not None else []:  # a rebuilt model has none
        sizes[tag] = sizes.get(tag, 0) + size
    return {
        "kind": "bnn",
        "model_id": meta.get("model_id"),
        "version": version,
        "version_time": _when(version)
        if isinstance(version, int) and version >= _VERSION_IS_A_TIME
        else None,
        "created": meta.get("created"),
        "arch": meta.get("arch"),
        "labels": model.labels,
        "input": "%dx%d %s" % (*model.input_shape, meta["input"].get("preprocess", "")),
        "host_test_accuracy": metrics.get("test_accuracy"),
        "train_seconds": metrics.get("train_seconds"),
        "recalibrated": meta.get("recalibrated"),
        "self_test": "%d inputs, %s"
        % (
            len(model.golden),
            "seeded (seed %d)" % model.golden_seed
            if model.golden_seed is not None
            else "stored images",
        ),
        "layers": layers,
        "sections": sizes,
        "sha256_inside": model.sha256.hex(),
        # the format version the file was written in: a device's binsort must read it
        "format": "%d.%d" % struct.unpack_from(bnn._HEADER, data)[1:3]
        if data is not None
        else None,
    }


def inspect_model(path: str) -> dict:
    """A report of `path` (a .bnn, .bsc, .bsd or .pranc); FormatError for a damaged file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BinsortError("cannot read %s: %s" % (path, e.strerror or e)) from None
    kind = model_kind(data[:4])
    report = {"file": path, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if kind == "bnn":
        try:
            model = bnn.read_bnn(data)  # the bytes already read, not the file again
        except FormatError as e:
            raise FormatError("%s: %s" % (path, e)) from None
        report.update(_bnn_report(model, data))
    elif kind == "cascade":
        c = cascade.read_cascade(data)
        report["kind"] = "cascade"
        report["complete"] = c.done
        report["stages"] = [
            dict(
                _bnn_report(s.model, None),
                host_accuracy=s.accuracy,
                ends_at_byte=s.end,
            )
            for s in c.stages
        ]
    elif kind == "delta":
        steps, done = delta.read_steps(data)
        report.update(
            kind="delta",
            base_sha256=delta.base_sha256(data),
            complete=done,
            steps=[{"ends_at_byte": end, "host_accuracy": acc} for end, acc in steps.items()],
        )
    elif kind == "pranc":
        from edge.engine.stream import read_pranc_file

        model, _ = read_pranc_file(path)
        report.update(_bnn_report(model, None), kind="pranc")
    else:
        raise BinsortError("%s: %s" % (path, wrong_magic(data[:64])))
    return report


def format_report(r: dict) -> str:
    lines = ["%s: %s, %d bytes, sha256 %s" % (r["file"], r["kind"], r["bytes"], r["sha256"])]
    if r["kind"] in ("bnn", "pranc"):  # a stream: the model it rebuilds
        lines += _format_bnn(r, "  ")
    elif r["kind"] == "cascade":
        lines.append("  %d stages%s" % (len(r["stages"]), "" if r["complete"] else " (a prefix)"))
        for i, s in enumerate(r["stages"], 1):
            acc = "" if s["host_accuracy"] is None else ", host accuracy %.4f" % s["host_accuracy"]
            lines.append("  stage %d: ends at byte %d%s" % (i, s["ends_at_byte"], acc))
            lines += _format_bnn(s, "    ")
    elif r["kind"] == "delta":
        lines.append("  updates the model with sha256 %s" % r["base_sha256"])
        for i, s in enumerate(r["steps"], 1):
            acc = "" if s["host_accuracy"] is None else ", host accuracy %.4f" % s["host_accuracy"]
            lines.append("  step %d: ends at byte %d%s" % (i, s["ends_at_byte"], acc))
    return "\n".join(lines)


def _format_bnn(r: dict, pad: str) -> list:
    version = str(r["version"])
    if r.get("version_time"):
        version += " (%s)" % r["version_time"]
    out = [
        pad
        + "model %s version %s, made %s%s"
        % (
            r["model_id"],
            version,
            r["created"],
            ", .bnn format %s" % r["format"] if r.get("format") else "",
        ),
        pad
        + "architecture %s, input %s, labels %s" % (r["arch"], r["input"], ", ".join(r["labels"])),
    ]
    if r["host_test_accuracy"] is not None:
        out.append(
            pad
            + "host test accuracy %.4f after %s s of training"
            % (r["host_test_accuracy"], r["train_seconds"])
        )
    if r.get("recalibrated"):
        rc = r["recalibrated"]
        out.append(
            pad
            + "recalibrated on the device from %s on %s frames"
            % (rc.get("from", "?")[:12], rc.get("frames"))
        )
    out.append(pad + "self-test: %s" % r["self_test"])
    out.append(pad + "layers:")
    for i, layer in enumerate(r["layers"]):
        out.append(
            pad
            + "  %2d %-9s %-10s -> %-10s k%d s%d pool %d  %7d weight bytes%s"
            % (
                i,
                layer["kind"],
                layer["in"],
                layer["out"],
                layer["k"],
                layer["stride"],
                layer["pool"],
                layer["weight_bytes"],
                ", NORM" if layer["norm"] else "",
            )
        )
    if r["sections"]:
        out.append(
            pad + "sections: " + ", ".join("%s %d B" % (t, n) for t, n in r["sections"].items())
        )
    return out
