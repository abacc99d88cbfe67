"""Keeping the line's boxes for training: a bounded ring of captures on the device.

Each decided box can leave one capture: the model input it was decided on (its middle frame, the
one where the box is most nearly centred under the camera), optionally the whole camera frame,
and a JSON sidecar with the decision, its confidence, the class probabilities and the model that
made it. The layout is in docs/format.md, section "Capture ring". Every file is written under a
temporary name, synced and renamed, and the sidecar comes last: a capture exists exactly when its
sidecar does, so `binsort data pull` never takes a half-written one.

The ring never holds more than `max_mb`: the oldest captures go first, sidecar first. It writes
nothing while the file system has less than `min_free_mb` free. The writing happens on a thread
of its own, so a slow SD card never holds up the frame loop; when it falls behind, captures are
dropped and counted, never queued without bound.
"""

import contextlib
import hashlib
import json
import os
import queue
import re
import threading
import time

from edge.files import fsync_dir, write_atomic
from protocol.errors import BinsortError

RING_FORMAT = "binsort-captures-1"
CAPTURE_FORMAT = "binsort-capture-1"
MARKER = "ring.json"
NAME = re.compile(r"^(\d{8})-(\d{8}T\d{6}Z)$")
KEEP_MODES = ("all", "doubtful")


def pnm(image) -> "tuple[bytes, str]":
    """A uint8 (H, W) grey or (H, W, 3|4) colour array as binary PGM or PPM, and its extension."""
    if image.ndim == 2:
        h, w = image.shape
        return b"P5\n%d %d\n255\n" % (w, h) + image.tobytes(), ".pgm"
    h, w = image.shape[:2]
    return b"P6\n%d %d\n255\n" % (w, h) + image[:, :, :3].tobytes(), ".ppm"


class BoxFrames:
    """The frames of the box now in view, thinned evenly to at most `keep` whatever the box's
    length (every other one is dropped when full, and from then on only every second is
    taken), so the middle frame of any box is at hand with bounded memory."""

    def __init__(self, keep: int = 16):
        self.keep = keep
        self.clear()

    def clear(self) -> None:
        self.items, self.count, self.stride = [], 0, 1

    def add(self, index: int, item) -> None:
        if self.count % self.stride == 0:
            self.items.append((index, item))
            if len(self.items) > self.keep:
                self.items = self.items[::2]
                self.stride *= 2
        self.count += 1

    def middle(self, first: int, last: int):
        """The kept item nearest the middle of frames first..last, or None."""
        inside = [(i, it) for i, it in self.items if first <= i <= last]
        if not inside:
            return None
        centre = (first + last) / 2
        return min(inside, key=lambda pair: abs(pair[0] - centre))


class CaptureRing:
    """A capture folder bounded to `max_mb`. `offer()` is cheap and never blocks; a thread
    writes. Only the daemon (one process) writes a ring; `binsort data pull` reads it and may
    remove what it has pulled."""

    def __init__(
        self,
        root: str,
        max_mb: float = 64.0,
        keep: str = "all",
        doubt_below: float = 0.9,
        full_frame: bool = False,
        min_free_mb: float = 100.0,
        log=None,
    ):
        if max_mb <= 0:
            raise BinsortError("capture: max_mb must be positive")
        if keep not in KEEP_MODES:
            raise BinsortError("capture: keep must be all or doubtful, not %r" % keep)
        if not 0 <= doubt_below <= 1:
            raise BinsortError("capture: doubt_below must be between 0 and 1")
        self.root, self.keep, self.doubt_below = root, keep, doubt_below
        self.full_frame = full_frame
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.min_free = int(min_free_mb * 1024 * 1024)
        self.log = log or (lambda line: None)
        try:
            os.makedirs(root, exist_ok=True)
            marker = os.path.join(root, MARKER)
            if not os.path.exists(marker):
                write_atomic(marker, json.dumps({"format": RING_FORMAT}).encode() + b"\n")
        except OSError as e:
            raise BinsortError("cannot use capture folder %s: %s" % (root, e.strerror)) from None
        self.stats = {"kept": 0, "dropped_busy": 0, "skipped_low_disk": 0, "skipped_too_big": 0}
        self.stats.update({"evicted": 0, "errors": 0, "last_error": None})
        self.captures, self.used, self.next_number = self._scan()
        self.queue = queue.Queue(maxsize=32)
        self.paused = False
        self.thread = threading.Thread(target=self._writer, name="capture", daemon=True)
        self.thread.start()

    # -- the frame loop's side ----------------------------------------------------------------

    def wants(self, decision) -> bool:
        """Whether this decided box is kept: every box, or (keep = doubtful) only boxes sent
        to the reject lane or decided with confidence below doubt_below."""
        if self.keep == "all":
            return True
        return decision.why is not None or decision.confidence < self.doubt_below

    def offer(self, decision, frame: "tuple | None", model: dict) -> bool:
        """Queue a capture of a decided box. `frame`: (index, (input, scores, full frame or
        None)) of the frame to keep. False when it was not wanted or the writer is behind."""
        if frame is None or not self.wants(decision):
            return False
        try:
            self.queue.put_nowait((decision, frame, model, time.time()))
        except queue.Full:
            self.stats["dropped_busy"] += 1
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        self.queue.put(None)
        self.thread.join(timeout)

    def summary(self) -> dict:
        out = {k: v for k, v in self.stats.items()}
        out.update(captures=len(self.captures), bytes=self.used, max_bytes=self.max_bytes)
        out["paused_low_disk"] = self.paused
        return out

    # -- the writer thread --------------------------------------------------------------------

    def _writer(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                self._write(*item)
            except OSError as e:
                self.stats["errors"] += 1
                if self.stats["last_error"] is None:
                    self.log("capture: cannot write to %s: %s" % (self.root, e))
                self.stats["last_error"] = str(e)

    def _write(self, decision, frame, model: dict, when: float) -> None:
        index, (pixels, scores, full) = frame
        name = "%08d-%s" % (self.next_number, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when)))
        files = {"input": pnm(pixels)}
        if self.full_frame and full is not None:
            files["frame"] = pnm(full)
        blobs = {
            role: (name + (".frame" if role == "frame" else "") + ext, data)
            for role, (data, ext) in files.items()
        }
        sidecar = {
            "format": CAPTURE_FORMAT,
            "name": name,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
            "label": decision.label,
            "confidence": round(float(decision.confidence), 4),
            "lane": decision.lane,
            "reject_reason": decision.why,
            "labels": list(model["labels"]),
            "probabilities": [round(float(p), 4) for p in decision.probs],
            "scores": [round(float(s), 4) for s in scores],
            "frame": index,
            "first_frame": decision.first,
            "last_frame": decision.last,
            "model": {k: model[k] for k in ("model_id", "version", "sha256")},
            "files": {
                role: {"name": f, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                for role, (f, data) in blobs.items()
            },
        }
        meta = json.dumps(sidecar, indent=1).encode() + b"\n"
        size = sum(len(data) for _, data in blobs.values()) + len(meta)
        if not self._room_for(size):
            return
        for fname, data in blobs.values():
            write_atomic(os.path.join(self.root, fname), data, sync_dir=False)
        write_atomic(
            os.path.join(self.root, name + ".json"), meta, sync_dir=False
        )  # last: the capture now exists
        fsync_dir(self.root)
        self.captures.append((name, size, [f for f, _ in blobs.values()]))
        self.used += size
        self.next_number += 1
        self.stats["kept"] += 1

    def _room_for(self, size: int) -> bool:
        """Make room for `size` bytes by dropping the oldest captures; False (nothing written)
        when one capture is over the whole ring or the disk is nearly full."""
        if size > self.max_bytes:
            self.stats["skipped_too_big"] += 1
            return False
        if self.used + size > self.max_bytes:
            # what `binsort data pull --remove` took is no longer there: count again
            self.captures, self.used, _ = self._scan()
        while self.captures and self.used + size > self.max_bytes:
            self._evict()
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        low = free - size < self.min_free
        if low != self.paused:
            self.paused = low
            self.log(
                "capture: paused, %d MB free on the disk" % (free >> 20)
                if low
                else "capture: resumed"
            )
        if low:
            self.stats["skipped_low_disk"] += 1
            return False
        return True

    def _evict(self) -> None:
        name, size, files = self.captures.pop(0)
        # the sidecar first: a capture without one is not a capture, whatever else remains
        for fname in [name + ".json"] + files:
            with contextlib.suppress(FileNotFoundError):  # pulled and removed already
                os.remove(os.path.join(self.root, fname))
        self.used -= size
        self.stats["evicted"] += 1

    def _scan(self) -> "tuple[list, int, int]":
        """Captures on disk, oldest first: (name, bytes, files besides the sidecar). Removes
        what a crash left half written (temporary files, image files whose sidecar never came)."""
        groups = {}
        for fname in os.listdir(self.root):
            stem = fname.split(".", 1)[0]
            if fname.endswith(".tmp"):
                os.remove(os.path.join(self.root, fname))
            elif NAME.match(stem):
                groups.setdefault(stem, []).append(fname)
        captures, used, number = [], 0, 0
        for stem in sorted(groups):
            number = max(number, int(stem[:8]) + 1)
            if stem + ".json" not in groups[stem]:
                for fname in groups[stem]:
                    os.remove(os.path.join(self.root, fname))
                continue
            size = sum(os.path.getsize(os.path.join(self.root, f)) for f in groups[stem])
            captures.append((stem, size, [f for f in groups[stem] if f != stem + ".json"]))
            used += size
        return captures, used, number
