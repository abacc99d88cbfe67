"""A photo-eye made of pixels: when a box's centre passed the camera's centre line, from the
frames themselves, for a line without a photo-eye.

Without an eye, a box's frames are those the model calls not `empty`, and the middle of the
first and last of them is a fair guess at when the box's centre passed. But a model reads the
*code*: its box starts when the code is far enough into view and ends when it has left, so
the guess is off by the code's place on the box and by how the model reads a code cut by the
frame's edge. On the demo's line that was a spread of 20-26 ms and a tail to 164 ms, late
for a 150 ms pulse centred on the box (docs/training-notes.md, "Fifteenth round").

This eye watches a band of pixels across the frame at its centre line (across the belt's
direction of travel: `axis` "x" when the belt runs along the frame's width) and compares each
pixel with the belt: per row, the median of recent frames that had no box near them (the model
called them, and the MARGIN frames each side, `empty`). A pixel is off the belt when it
differs by more than four times its row's spread on the belt (and by at least 12 grey
levels); the line is covered when a quarter of the band's pixels are off. The covered run of
frames that holds the model's box (a single uncovered frame does not break it: a code's dark
ink can look like belt) is the box crossing the line, like a real photo-eye's blocked run,
and its middle is the box's time.

It answers only when it can tell: with the belt learnt, a run that began and ended inside the
frames it remembers (ended two frames before it is asked), mostly covered, over at least half
of the model's frames and no longer than the model's box allows. While the run may still go
on (the model's box ended, a code on the box's leading side gone from view, but the box's
trailing end still covers the line) it says NOT_YET, and the tracker may hold the decision a
few frames and ask again (edge.line.decide.BoxTracker; the daemon allows it while the nearest
diverter's pulse is far enough off). Otherwise (a box the colour of the belt, two boxes
touching, a change of light it has not learnt yet) the tracker keeps the model's middle. The
daemon's status counts the boxes timed each way, and those held.
"""

import collections

import numpy as np

BAND = 3  # pixels wide, at the centre line
MARGIN = 2  # a frame is belt when it and this many frames each side looked empty
HISTORY = 32  # belt frames whose median is the belt
MIN_HISTORY = 8  # belt frames before the eye answers
SPREADS = 4.0  # a pixel is off the belt beyond this many of its row's spreads...
FLOOR = 12.0  # ... and at least this many grey levels
COVERED = 0.25  # the line is covered when this share of its pixels is off the belt
RING = 512  # frames remembered
RELEARN = 8  # the belt's median is taken again after this many belt frames (light drifts)
GAP = 1  # a run goes on across this many uncovered frames (code ink can look like belt)
NOT_YET = "not yet"  # centre()'s answer while the run may still go on


class PixelEye:
    def __init__(self, axis: str = "x"):
        if axis not in ("x", "y"):
            raise ValueError("axis is x or y")
        self.axis = axis
        self.pending = collections.deque(maxlen=2 * MARGIN + 1)  # (band, looked empty)
        self.belt = collections.deque(maxlen=HISTORY)
        self.level = self.limit = None  # per row: the belt's median grey, and how far off is off
        self.ring = collections.deque(maxlen=RING)  # (index, t, covered or None)
        self.learnt = 0  # belt frames taken in

    def band(self, image: np.ndarray) -> np.ndarray:
        """The pixels at the centre line: BAND columns across the belt, as rows x BAND."""
        img = np.asarray(image)
        if self.axis == "y":
            img = img.swapaxes(0, 1)
        c = img.shape[1] // 2
        band = img[:, max(0, c - BAND // 2) : c + BAND // 2 + 1].astype(np.float64)
        return band.mean(axis=2) if band.ndim == 3 else band  # colour: only the band is grey

    def push(self, index: int, t: float, image, looked_empty: bool) -> None:
        """One frame: whether its centre line is covered, and what it teaches about the belt."""
        band = self.band(image)
        covered = None
        if self.level is not None and self.level.shape[0] == band.shape[0]:
            off = np.abs(band - self.level[:, None]) > self.limit[:, None]
            covered = bool(off.mean() >= COVERED)
        self.ring.append((index, t, covered))
        self.pending.append((band, looked_empty))
        if len(self.pending) == self.pending.maxlen and all(e for _, e in self.pending):
            if self.belt and self.belt[-1].shape != band.shape:
                self.belt.clear()  # the frames' size changed: learn the belt again
                self.level = self.limit = None
            self.belt.append(self.pending[MARGIN][0])
            self.learnt += 1
            if len(self.belt) >= MIN_HISTORY and (self.level is None or self.learnt % RELEARN == 0):
                stack = np.array(self.belt)  # frames x rows x BAND
                self.level = np.median(stack.mean(axis=2), axis=0)
                dev = np.abs(stack - self.level[None, :, None])
                spread = 1.4826 * np.median(
                    dev.transpose(1, 0, 2).reshape(len(self.level), -1), axis=1
                )
                self.limit = np.maximum(SPREADS * spread, FLOOR)

    @staticmethod
    def _bridged(ring, k, step) -> bool:
        """Whether the covered run at ring[k] goes on to ring[k + step]: it is covered, or a
        covered frame follows within GAP uncovered ones."""
        for j in range(1, GAP + 2):
            n = k + step * j
            if not 0 <= n < len(ring) or ring[n][2] is None:
                return False
            if ring[n][2]:
                return True
        return False

    def centre(self, first: int, last: int):
        """When the box the model saw in frames first..last crossed the line (the middle of
        the covered run that holds it); None when the eye cannot tell; NOT_YET while the run
        that holds it may still go on (the box still covers the line, or has only just left)."""
        ring = list(self.ring)
        at = {index: k for k, (index, _, _) in enumerate(ring)}
        if first not in at or last not in at:
            return None
        a, b = at[first], at[last]
        inside = [k for k in range(a, b + 1) if ring[k][2]]
        if not inside:
            return None
        middle = (a + b) / 2
        k = min(inside, key=lambda j: abs(j - middle))
        lo = hi = k
        while lo > 0 and self._bridged(ring, lo, -1):
            lo -= 1
        while hi < len(ring) - 1 and self._bridged(ring, hi, 1):
            hi += 1
        if lo == 0 or ring[lo - 1][2] is None:
            return None  # the run's start is forgotten or unknown
        span, run = b - a + 1, hi - lo + 1
        if run > 1.5 * span + 4 or lo < a - span // 2 - 3 or hi > b + span // 2 + 3:
            return None  # longer than this box: two boxes, or the light changed
        if hi + GAP + 1 > len(ring) - 1:
            return NOT_YET  # the run may go on: asked again a frame later, it may tell
        if min(b, hi) - max(a, lo) + 1 < 0.5 * span:
            return None  # a glimpse of a box the eye hardly tells from the belt
        if sum(1 for _, _, c in ring[lo : hi + 1] if c) < 0.75 * run:
            return None  # mostly gaps: the eye hardly sees this box
        return (ring[lo][1] + ring[hi][1]) / 2
