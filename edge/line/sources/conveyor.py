"""sim:[?speed=8&gap=0.6-1.6&seed=0&codes=F06,K11,S19,V22&boxes=0&size=100&fps=0]: a conveyor
simulator. Boxes with printed codes (edge.imaging.box_images) ride a belt past a fixed camera.

The belt is one long strip: its tone is fixed for the run, its streaks and grain are drawn per
block of columns. Box i sits in a tile `size` pixels wide, followed by `gap` tile widths of
empty belt (drawn uniformly from the range). Each frame is the `size` x `size` window of the
strip at the camera, lit with a fixed gradient and new sensor noise; then the belt moves
`speed` pixels. `boxes` > 0 ends the run after that many boxes have left the view.

The simulator knows the truth of every frame: which box is under the photo-eye (the camera's
centre line crosses the box), so tests and the demo can count missed and double decisions.
`eye_pin` (a gpiozero mock pin) is driven from that, so the daemon reads its photo-eye as it
would on the line. `fps` > 0 paces frames in real time; otherwise frame times are virtual, at
30 frames a second, so a test runs as fast as the engine.
"""

import collections
import math
import random
import time

import numpy as np
from PIL import Image

from edge.imaging.box_images import DEFAULT_CODES, EMPTY_LABEL, box_layer, seeded_rng
from edge.line.sources import Frame, number
from protocol.errors import BinsortError

VIRTUAL_FPS = 30.0


class ConveyorSimulator:
    def __init__(self, params: dict, eye_pin=None):
        self.size = number(params, "size", 100, int, 32, "sim")
        self.speed = number(params, "speed", 8.0, float, 0.5, "sim")
        self.seed = number(params, "seed", 0, int, 0, "sim")
        self.limit = number(params, "boxes", 0, int, 0, "sim")
        self.fps = number(params, "fps", 0.0, float, 0.0, "sim")
        low, _, high = params.get("gap", "0.6-1.6").partition("-")
        try:
            self.gap = (float(low), float(high or low))
        except ValueError:
            raise BinsortError(
                "sim: gap must be MIN-MAX in box widths, not %r" % params["gap"]
            ) from None
        if not 0.2 <= self.gap[0] <= self.gap[1]:
            raise BinsortError("sim: gap must be at least 0.2 box widths, MIN <= MAX")
        codes = params.get("codes")
        self.codes = tuple(c for c in codes.split(",") if c) if codes else DEFAULT_CODES
        if not self.codes:
            raise BinsortError("sim: codes is empty")
        self.eye_pin = eye_pin
        self.rng = random.Random(self.seed)
        self.nrng = np.random.default_rng(self.seed)
        tone = self.rng.uniform(40, 90)
        self.belt_tone = tone * np.array(
            [self.rng.uniform(0.9, 1.05), 1.0, self.rng.uniform(0.9, 1.1)]
        )
        angle = self.rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0 : self.size, 0 : self.size] / self.size
        self.light = 1 + 0.3 * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
        self.boxes = collections.deque()  # boxes in or ahead of the view: id, label, x0, ...
        self.made = 0  # boxes made so far
        self.next_x0 = self.size  # the first box enters from the left edge
        self.blocks = {}
        self.x = 0.0  # strip coordinate of the window's left edge
        self.index = 0
        self.started = time.monotonic()
        self.left = 0  # boxes that have left the view

    # -- the strip ---------------------------------------------------------------------------

    def _add_box(self) -> None:
        i = self.made
        self.made += 1
        label = self.rng.choice(self.codes)
        rng = seeded_rng(self.seed, "sim", label, i)
        nrng = np.random.default_rng(rng.getrandbits(64))
        layer = box_layer(rng, nrng, self.size, label).rotate(
            rng.uniform(-10, 10), resample=Image.BICUBIC
        )
        layer = layer.resize((self.size, self.size), Image.LANCZOS)
        left, _, right, _ = layer.getchannel("A").getbbox()
        self.boxes.append(
            {
                "id": i,
                "label": label,
                "x0": self.next_x0,
                "layer": layer,
                "dy": int(rng.uniform(-0.08, 0.08) * self.size),
                "lo": self.next_x0 + left,
                "hi": self.next_x0 + right,
            }
        )
        self.next_x0 += self.size + int(self.rng.uniform(*self.gap) * self.size)

    def _block(self, k: int) -> np.ndarray:
        """Belt columns [k*size, (k+1)*size) as float RGB."""
        if k not in self.blocks:
            rng = np.random.default_rng((self.seed, k))
            streaks = rng.normal(0, 5, size=(1, self.size))
            grey = streaks + rng.normal(0, 4, size=(self.size, self.size))
            self.blocks[k] = np.clip(self.belt_tone + grey[:, :, None], 0, 255)
            for old in [b for b in self.blocks if b < k - 2]:
                del self.blocks[old]
        return self.blocks[k]

    def _window(self, x: int) -> np.ndarray:
        k = x // self.size
        strip = np.concatenate([self._block(k), self._block(k + 1)], axis=1)
        off = x - k * self.size
        return strip[:, off : off + self.size]

    # -- frames ------------------------------------------------------------------------------

    def under_eye(self, x: float):
        """The box the camera's centre line crosses at window position x, or None."""
        centre = x + self.size / 2
        for box in self.boxes:
            if box["lo"] <= centre < box["hi"]:
                return box
        return None

    def read(self):
        if self.limit and self.left >= self.limit:
            return None
        x = int(self.x)
        while self.next_x0 < x + 2 * self.size and not (self.limit and self.made >= self.limit):
            self._add_box()
        img = Image.fromarray(self._window(x).astype(np.uint8), "RGB")
        for box in self.boxes:
            if box["x0"] + self.size > x and box["x0"] < x + self.size:
                img.paste(box["layer"], (box["x0"] - x, box["dy"]), box["layer"])
        grey = np.asarray(img.convert("L"), dtype=np.float64) * self.light
        grey += self.nrng.normal(0, 3, size=grey.shape)
        frame_img = np.clip(grey, 0, 255).astype(np.uint8)
        box = self.under_eye(x)
        truth = {"box": box["id"] if box else None, "label": box["label"] if box else EMPTY_LABEL}
        if self.eye_pin is not None:
            (self.eye_pin.drive_low if box else self.eye_pin.drive_high)()  # active-low sensor
        while self.boxes and self.boxes[0]["hi"] <= x:
            self.boxes.popleft()  # gone past the camera
            self.left += 1
        if self.fps:
            due = self.started + self.index / self.fps
            time.sleep(max(0.0, due - time.monotonic()))
            t = time.monotonic()
        else:
            t = self.index / VIRTUAL_FPS
        self.x += self.speed
        self.index += 1
        return Frame(frame_img, t, self.index - 1, truth)

    def close(self) -> None:
        pass


def open_source(rest: str, params: dict, **kwargs):
    return ConveyorSimulator(params, kwargs.get("eye_pin"))


def decision_boxes(decisions: list, truths: list) -> list:
    """The box each decision covered: the one most of its frames saw (None: no box). `truths`
    holds the simulator's `Frame.truth` of every frame the daemon read, in order."""
    out = []
    for d in decisions:
        ids = [
            truths[i]["box"]
            for i in range(d["first_frame"], d["last_frame"] + 1)
            if i < len(truths) and truths[i] and truths[i]["box"] is not None
        ]
        out.append(collections.Counter(ids).most_common(1)[0][0] if ids else None)
    return out


def score_decisions(decisions: list, truths: list, swap_frames=()) -> dict:
    """Match decisions to the simulator's boxes (decision_boxes) and count what went wrong.
    Missed: a box with no decision; double: a box with more than one; spurious: a decision
    on no box. `swap_frames`: frames where a model was swapped in; boxes in view then that
    were missed or decided twice are counted in `swap_missed`. Each decision gets its box's
    `true_label`."""
    labels, frames_of = {}, {}
    for i, t in enumerate(truths):
        if t and t["box"] is not None:
            labels[t["box"]] = t["label"]
            frames_of.setdefault(t["box"], []).append(i)
    count = collections.Counter()
    right = 0
    for d, box in zip(decisions, decision_boxes(decisions, truths), strict=True):
        count[box] += 1
        d["true_label"] = labels.get(box)
        right += int(box is not None and labels[box] == d["label"])
    bad = {b for b in labels if count[b] != 1}
    swap_boxes = {
        b for b, fr in frames_of.items() for s in swap_frames if fr[0] - 30 <= s <= fr[-1] + 30
    }
    return {
        "boxes": len(labels),
        "decisions": len(decisions),
        "missed": sum(1 for b in labels if count[b] == 0),
        "double": sum(1 for b in labels if count[b] > 1),
        "spurious": count[None],
        "accuracy": round(right / len(labels), 4) if labels else None,
        "swap_missed": len(bad & swap_boxes),
    }
