"""sim:[?speed=8&gap=0.6-1.6&seed=0&codes=F06,K11,S19,V22&boxes=0&size=100&fps=0&...]: a
conveyor simulator. Boxes with printed codes (edge.imaging.box_images) ride a belt past a fixed
camera, and on to the diverters.

The belt is one long strip: its tone is fixed for the run, its streaks and grain are drawn per
block of columns. Box i sits in a tile `size` pixels wide, followed by `gap` tile widths of
empty belt (drawn uniformly from the range). Each frame is the `size` x `size` window of the
strip at the camera, lit with a fixed gradient and new sensor noise. `boxes` > 0 ends the run
after that many boxes have left the view.

The belt is physical: the camera's window spans `view` metres of belt (default 0.25, so a box
tile is 25 cm long), and the belt moves at `belt` metres a second (default: `speed` pixels a
frame at `rate` frames a second), varying sinusoidally by +-`vary` (a fraction) over a 20 s
period. The camera takes a frame every 1/`rate` s; reading one takes `latency` ms of inference
on top (a Pi Zero's), and frames the camera took meanwhile are dropped, as a camera that keeps
only its newest frame would. Times are virtual (starting at 0 and moved on by the frames, so a
test runs as fast as the engine) unless `fps` > 0, which paces frames in real time
(time.monotonic) at that rate.

The simulator knows the truth of every frame: which box is under the photo-eye (the camera's
centre line crosses the box), so tests and the demo can count missed and double decisions, and
`passes(box, metres)` says when a box's centre passes a point that far downstream of the
camera's centre line, so the demo can tell whether each diverter hit its box (score_sorting).
`eye_pin` (a gpiozero mock pin) is driven from the truth, so the daemon reads its photo-eye as
it would on the line.
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

PARAMS = (
    "speed", "gap", "seed", "codes", "boxes", "size", "fps", "rate", "view", "belt", "vary",
    "latency",
)  # fmt: skip
VARY_PERIOD_S = 20.0


class ConveyorSimulator:
    def __init__(self, params: dict, eye_pin=None):
        self.size = number(params, "size", 100, int, 32, "sim", 1024)
        self.seed = number(params, "seed", 0, int, 0, "sim")
        self.limit = number(params, "boxes", 0, int, 0, "sim")
        self.fps = number(params, "fps", 0.0, float, 0.0, "sim", 1000)
        self.rate = self.fps or number(params, "rate", 30.0, float, 1.0, "sim", 1000)
        self.view_m = number(params, "view", 0.25, float, 0.01, "sim", 100)
        self.m_per_px = self.view_m / self.size
        speed = number(params, "speed", 8.0, float, 0.5, "sim", 1024)  # pixels a frame
        self.belt_mps = number(
            params, "belt", speed * self.rate * self.m_per_px, float, 0.01, "sim", 100
        )
        self.vary = number(params, "vary", 0.0, float, 0.0, "sim")
        if self.vary >= 0.9:
            raise BinsortError("sim: vary is a fraction of the belt speed, below 0.9")
        self.latency = number(params, "latency", 0.0, float, 0.0, "sim", 10000) / 1000.0
        self.virtual = not self.fps
        self.t = None  # the time the last frame was taken (sim clock)
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
        self.centres = {}  # box id -> its centre on the strip (pixels), kept after it leaves
        self.made = 0  # boxes made so far
        self.next_x0 = self.size  # the first box enters from the left edge
        self.blocks = {}
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
        self.centres[i] = self.next_x0 + (left + right) / 2
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

    # -- the belt's motion ---------------------------------------------------------------------

    def travelled(self, t: float) -> float:
        """Metres of belt past the camera since the start, at sim time t (seconds)."""
        w = 2 * math.pi / VARY_PERIOD_S
        return self.belt_mps * (t + self.vary * (1 - math.cos(w * t)) / w)

    def _time_at(self, metres: float) -> float:
        """The sim time at which the belt has travelled `metres` (it only moves forward)."""
        lo, hi = 0.0, max(1.0, 2 * metres / self.belt_mps)
        while self.travelled(hi) < metres:
            hi *= 2
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.travelled(mid) < metres else (lo, mid)
        return (lo + hi) / 2

    def passes(self, box: int, metres: float) -> float:
        """When box `box`'s centre passes the point `metres` downstream of the camera's centre
        line, on the frames' clock."""
        centre_line_at_start = self.size / 2  # strip pixel under the centre line at t = 0
        return self._clock(
            self._time_at((self.centres[box] - centre_line_at_start) * self.m_per_px + metres)
        )

    def _clock(self, t: float) -> float:
        return t if self.virtual else self.started + t

    def now(self) -> float:
        """The frames' clock now: once a frame has been read, the time its inference ends."""
        if not self.virtual:
            return time.monotonic()
        return 0.0 if self.t is None else self.t + self.latency

    # -- frames ------------------------------------------------------------------------------

    def read(self):
        if self.limit and self.left >= self.limit:
            return None
        period = 1.0 / self.rate
        if self.virtual:
            # the next frame the camera takes once the last one's inference is done
            ready = 0.0 if self.t is None else self.t + max(self.latency, period)
            self.t = math.ceil(ready / period - 1e-9) * period
        else:
            self.t = time.monotonic() - self.started  # paced below
            self.t = math.ceil(self.t / period - 1e-9) * period
            time.sleep(max(0.0, self.started + self.t - time.monotonic()))
        x = int(self.travelled(self.t) / self.m_per_px)
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
        if not self.virtual and self.latency:
            time.sleep(self.latency)
        self.index += 1
        return Frame(frame_img, self._clock(self.t), self.index - 1, truth)

    def close(self) -> None:
        pass


def check(rest: str, params: dict) -> None:
    """The URL's values: the simulator is cheap to make, so it is made and dropped."""
    ConveyorSimulator(params)


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


def score_sorting(
    sim, decisions: list, truths: list, plan: list, lanes: dict, reject: str, distances: dict
) -> dict:
    """Where each diverter hit, from the belt's physics. Box b belongs in lane R (its true
    label's lane, else `reject`). A pulse is on box b when the diverter was on (from the
    pulse's start to its end) at the moment b's centre passed that diverter. b is sorted right
    when R's diverter was on it and no other was. Of the pulses planned for b's decision:
    `late` (decided after b had passed, so never fired, or started after b's centre passed)
    and `early` (ended before it arrived); `wrong_diverter` counts boxes a pulse planned for
    another box was on. `lane_right`: boxes whose decision named R (what the model got right,
    whatever the timing); with no box lost to timing, sorted_right equals it."""
    label_of = {t["box"]: t["label"] for t in truths if t and t["box"] is not None}
    box_of_seq = {}
    named = {}
    for d, box in zip(decisions, decision_boxes(decisions, truths), strict=True):
        if box is not None:
            box_of_seq[d["seq"]] = box
            named.setdefault(box, []).append(d["lane"])
    passes = {}

    def at(box, lane):
        if (box, lane) not in passes:
            passes[box, lane] = sim.passes(box, distances[lane])
        return passes[box, lane]

    fired = [p for p in plan if not p["late"]]
    right = lane_right = late = early = wrong = 0
    for box, label in label_of.items():
        want = lanes.get(label, reject)
        lane_right += int(named.get(box) == [want])
        on_it = [p for p in fired if p["start"] <= at(box, p["lane"]) <= p["off"]]
        hit = {p["lane"] for p in on_it}
        right += int(hit == {want})
        wrong += int(any(box_of_seq.get(p["seq"]) != box for p in on_it))
    for p in plan:
        box = box_of_seq.get(p["seq"])
        if box is None:
            continue
        passed = at(box, p["lane"])
        late += int(p["late"] or p["start"] > passed)
        early += int(not p["late"] and p["off"] < passed)
    n = len(label_of)
    return {
        "sorted_right": round(right / n, 4) if n else None,
        "lane_right": round(lane_right / n, 4) if n else None,
        "late": late,
        "early": early,
        "wrong_diverter": wrong,
    }
