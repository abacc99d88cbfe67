"""Tier 0 on a device: re-estimate the active model's thresholds from the boxes in the capture
ring (edge.engine.recalibrate), install the result like any model (slot, self-test, trial), and
undo it.

Frames are chosen balanced by the decided label: the newest captures of each label, at most
`frames` divided by the number of labels the ring holds of each. A line that runs mostly one
box code would otherwise pull every BatchNorm statistic towards that code (measured in
docs/training-notes.md section 6: 70% of one code costs 4.7 points without balancing).
"""

import json
import os

import numpy as np

from edge.engine.recalibrate import MIN_FRAMES, recalibrate
from edge.imaging.preprocess import load_image, preprocess
from edge.install.store import Rejected, SlotStore, _other
from edge.line.capture import NAME
from protocol.bnn import read_bnn_file
from protocol.errors import BinsortError, FormatError

DEFAULT_FRAMES = 1000


def _sidecars(folder: str) -> list:
    """The capture ring's sidecars, newest first, as (name, dict); unreadable ones skipped."""
    try:
        names = sorted(
            (f[:-5] for f in os.listdir(folder) if f.endswith(".json") and NAME.match(f[:-5])),
            reverse=True,
        )
    except OSError as e:
        raise BinsortError("cannot read the capture folder %s: %s" % (folder, e.strerror)) from None
    out = []
    for name in names:
        try:
            with open(os.path.join(folder, name + ".json")) as f:
                out.append((name, json.load(f)))
        except (OSError, ValueError, RecursionError):
            continue  # evicted meanwhile, or not a sidecar
    return out


def balanced_frames(folder: str, labels: list, height: int, width: int, frames: int):
    """(uint8 (N, height, width) model inputs, {label: count}) of the newest captures of each
    decided label: at most `frames` divided by the number of labels the ring holds of each
    (a label no box was decided as, such as an empty belt, takes no share)."""
    found = {label: [] for label in labels}
    for _, side in _sidecars(folder):
        try:
            probs = side["probabilities"]
            label = side["labels"][int(np.argmax(probs))]
            entry = side["files"]["input"]["name"]
        except (KeyError, TypeError, ValueError, IndexError):
            continue
        if label in found and len(found[label]) < frames:
            found[label].append(os.path.join(folder, os.path.basename(entry)))
    present = [label for label in labels if found[label]]
    quota = frames // max(1, len(present))
    picked = {label: found[label][:quota] for label in labels}
    images = []
    for paths in picked.values():
        for path in paths:
            try:
                image = load_image(path)
            except BinsortError:
                continue  # evicted between the sidecar and its image
            if image.shape != (height, width):
                image = preprocess(image, height, width)
            images.append(image)
    counts = {label: len(v) for label, v in picked.items()}
    if not images:
        return np.zeros((0, height, width), np.uint8), counts
    return np.stack(images), counts


def recalibrate_store(
    store: SlotStore, captures: str, frames: int = DEFAULT_FRAMES, log=None, install: bool = True
) -> dict:
    """Recalibrate the store's active model on the capture ring and (with `install`) install
    it through trial. Returns the report (edge.engine.recalibrate) with the frames per label
    and the slot. BinsortError, with nothing installed, when there is no active `.bnn`, it
    carries no NORM, or the ring has too few frames."""
    slot, record = store.active()
    if record is None:
        raise BinsortError("the store has no active model to recalibrate")
    path = store.model_path(slot)
    if not path.endswith(".bnn"):
        raise BinsortError(
            "the active model is a %s, not a .bnn: only a .bnn can be recalibrated" % record["kind"]
        )
    try:
        model = read_bnn_file(path)
    except FormatError as e:
        raise BinsortError(str(e)) from None
    h, w = model.input_shape
    images, counts = balanced_frames(captures, model.labels, h, w, frames)
    if len(images) < MIN_FRAMES:
        raise BinsortError(
            "the capture ring %s has %d usable frames (%s); recalibrating needs at least %d"
            % (captures, len(images), ", ".join("%s %d" % kv for kv in counts.items()), MIN_FRAMES)
        )
    data, report = recalibrate(model, images, log, source=record["sha256"])
    report["per_label"] = counts
    if install:
        origin = record.get("recalibrated_from", record["sha256"])
        extra = {
            "model_id": record["model_id"],
            "version": record["version"],
            "recalibrated_from": origin,
            "recalibration": {"frames": report["frames"], "at": report["at"]},
        }
        try:
            report["slot"] = store.install_local(
                data,
                extra,
                "recalibrated %s v%d on %d frames"
                % (record["model_id"], record["version"], report["frames"]),
            )
        except Rejected as e:
            raise BinsortError("the recalibrated model was refused: %s" % e) from None
    return report


def undo(store: SlotStore) -> str:
    """Make the model a recalibration was made from (or an earlier recalibration of it) active
    again; it is in the other slot. Returns that slot; BinsortError when it is not there."""
    slot, record = store.active()
    origin = record.get("recalibrated_from") if record else None
    if origin is None:
        raise BinsortError("the active model is not a recalibration: there is nothing to undo")
    other = _other(slot)
    rec = store.state()["slots"].get(other)
    if not rec or origin not in (rec["sha256"], rec.get("recalibrated_from")):
        raise BinsortError(
            "the model this recalibration was made from (%s) is no longer in a slot" % origin[:16]
        )
    return store.activate(other, "undo the recalibration of slot %s" % slot)
