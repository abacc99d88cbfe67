"""From per-frame scores to one decision per box, and from a decision to a lane.

A box's boundaries come from the photo-eye when there is one: the box is in view while the eye
is blocked. Without one they come from the model's `empty` class, with hysteresis: a box starts
after `enter` frames in a row that are not empty and ends after `leave` frames in a row that
are; the photo-eye is debounced with the same counts. Either way the decision combines every
frame of the box: the mean of their class probabilities (softmax of the scores), best
non-empty label wins. A box is decided once, when it ends, so it is never sorted twice or
skipped; with the pixel eye a decision may be held back a few frames, until the box has
cleared the centre line, so that its time can come from the pixels (BoxTracker).

A decision's `t` is the time the box's centre passed the camera's centre line (the photo-eye's
line): the middle of the times of its first and last frames, each taken at most a frame
period after its edge crossed (so it is off by less than half a frame period). The actuators
time the diverters from it (edge.line.actuators), not from when the decision was made.
"""

import numpy as np

from edge.engine.base import softmax
from edge.line.pixel_eye import NOT_YET
from protocol.errors import BinsortError


class Decision:
    __slots__ = (
        "seq",
        "label",
        "confidence",
        "frames",
        "first",
        "last",
        "t",
        "lane",
        "why",
        "probs",
        "timing",
    )

    def __init__(self, seq, label, confidence, frames, first, last, t, probs=()):
        self.seq, self.label, self.confidence = seq, label, confidence
        self.probs = probs  # mean class probabilities over the box's frames
        self.frames, self.first, self.last, self.t = frames, first, last, t
        self.lane = None
        self.why = None  # why it went to the reject lane
        self.timing = "model"  # where `t` came from: "model", "image" (PixelEye) or "eye"

    def as_dict(self) -> dict:
        return {
            "seq": self.seq,
            "label": self.label,
            "confidence": round(float(self.confidence), 4),
            "frames": self.frames,
            "first_frame": self.first,
            "last_frame": self.last,
            "lane": self.lane,
            "reject_reason": self.why,
            "timing": self.timing,
        }


class BoxTracker:
    """Frames in, one Decision per box out.

    With a pixel eye, a box that ends (for the model) while its covered run at the centre line
    goes on, because the box's trailing end is still passing the line, is held back until the
    run ends, so that the pixels can time it: for at most `hold` frames (by default and at
    most enter + leave - 1, fewer than the next box needs to be decided, so decisions keep their
    order and never pile up) and no later than `hold_s` seconds after the model's middle of the
    box (the daemon's deadline: the first diverter's pulse must still be ahead). Then it goes
    out timed by the eye if it can tell, else by the model's middle."""

    def __init__(
        self,
        labels: list,
        empty: str = "empty",
        enter: int = 2,
        leave: int = 3,
        pixel_eye=None,
        hold: "int | None" = None,
        hold_s: float = 0.0,
    ):
        if enter < 1 or leave < 1:
            raise BinsortError("decide: enter_frames and leave_frames must be at least 1")
        self.empty_label = empty
        self.pixel_eye = pixel_eye  # edge.line.pixel_eye.PixelEye: box times from the pixels
        self.image_timed = self.model_timed = 0  # boxes timed by the pixel eye, by the model
        cap = enter + leave - 1
        self.hold = max(0, min(cap if hold is None else int(hold), cap)) if hold_s > 0 else 0
        self.hold_s = hold_s
        self.held = None  # [Decision, frames waited] while the pixel eye may still time it
        self.held_count = 0  # decisions that were held back for the eye
        self.relabel(labels)
        self.enter, self.leave = enter, leave
        self.seq = 0
        self._reset()

    def _reset(self) -> None:
        self.probs = []  # per frame of the current candidate box
        self.frames = []  # (index, t)
        self.run_box = 0  # frames in a row that look like a box
        self.run_empty = 0
        self.in_box = False

    def relabel(self, labels: list) -> None:
        """A new model's labels; a box in progress keeps its frames (same label order)."""
        if getattr(self, "labels", None) and list(labels) != self.labels:
            self._reset()  # its probabilities would not line up
        self.labels = list(labels)
        self.empty = (
            self.labels.index(self.empty_label) if self.empty_label in self.labels else None
        )

    def push(self, index: int, t: float, scores: np.ndarray, eye=None, image=None):
        """Feed one frame; returns a Decision when a box has just ended (or one held back for
        the pixel eye is let go), else None.
        `eye` is the photo-eye (True: a box is in front of it) or None without one; `image`
        the frame, for the pixel eye (without a photo-eye)."""
        p = softmax(np.asarray(scores, dtype=np.float64))
        if eye is not None:
            return self._push_eye(index, t, p, eye)
        if self.empty is None:
            raise BinsortError("without a photo-eye the model needs an 'empty' class")
        looks_empty = int(p.argmax()) == self.empty
        if self.pixel_eye is not None and image is not None:
            self.pixel_eye.push(index, t, image, looks_empty)
        # a held decision is out before this frame can end the next box, which needs
        # enter + leave frames, more than a decision is ever held
        held = self._release(t) if self.held is not None else None
        return self._push_model(index, t, p, looks_empty) or held

    def _push_model(self, index, t, p, looks_empty):
        if not self.in_box:
            if looks_empty:
                self._reset()
                return None
            self.run_box += 1
            self.probs.append(p)
            self.frames.append((index, t))
            if self.run_box >= self.enter:
                self.in_box = True
            return None
        if looks_empty:
            self.run_empty += 1
            if self.run_empty >= self.leave:
                return self._decide()
            return None
        self.run_empty = 0
        self.probs.append(p)
        self.frames.append((index, t))
        return None

    def _push_eye(self, index, t, p, eye):
        """The photo-eye, debounced by the same counts: a box starts after `enter` blocked
        frames in a row and ends after `leave` clear ones, so a flicker neither splits a box
        nor makes one."""
        if not self.in_box:
            if not eye:
                self._reset()
                return None
            self.run_box += 1
            self.probs.append(p)
            self.frames.append((index, t))
            self.in_box = self.run_box >= self.enter
            return None
        if eye:
            self.run_empty = 0
            self.probs.append(p)
            self.frames.append((index, t))
            return None
        self.run_empty += 1
        return self._decide("eye") if self.run_empty >= self.leave else None

    def _decide(self, timing=None) -> Decision:
        mean = np.mean(self.probs, axis=0)
        probs = mean.tolist()
        if self.empty is not None:
            mean[self.empty] = -1.0
        best = int(mean.argmax())
        first, last = self.frames[0], self.frames[-1]
        d = Decision(
            self.seq,
            self.labels[best],
            float(mean[best]),
            len(self.probs),
            first[0],
            last[0],
            (first[1] + last[1]) / 2,
            probs,
        )
        self.seq += 1
        self._reset()
        if timing:
            d.timing = timing
        elif self.pixel_eye is not None:
            answer = self.pixel_eye.centre(d.first, d.last)
            if answer is NOT_YET and self.hold:
                self.held = [d, 0]
                self.held_count += 1
                return None
            return self._timed(d, answer)
        return d

    def _release(self, t: float):
        """The held decision, once the eye can tell, or its frames or time are up; else None."""
        d, waited = self.held
        answer = self.pixel_eye.centre(d.first, d.last)
        waited += 1
        if answer is NOT_YET and waited < self.hold and t < d.t + self.hold_s:
            self.held[1] = waited
            return None
        self.held = None
        return self._timed(d, answer)

    def _timed(self, d: Decision, answer) -> Decision:
        """d with the eye's time when it has one, else the model's middle it already has."""
        if answer is None or answer is NOT_YET:
            self.model_timed += 1
        else:
            d.t, d.timing = answer, "image"
            self.image_timed += 1
        return d

    def abandon(self) -> None:
        """Forget a box in progress and a decision held back (the source failed or the model
        did: the actuator has gone safe, and the frames are no longer one line)."""
        self._reset()
        self.held = None


class LaneMap:
    """Labels to lanes. Low confidence, or a label with no lane, goes to the reject lane."""

    def __init__(self, lanes: dict, reject: str, min_confidence: float):
        if not isinstance(reject, str) or not reject:
            raise BinsortError("lanes: 'reject' must name the reject lane")
        if not 0.0 <= min_confidence <= 1.0:
            raise BinsortError("decide: min_confidence must be between 0 and 1")
        self.lanes, self.reject, self.min_confidence = dict(lanes), reject, min_confidence

    def check_labels(self, labels: list, empty: str = "empty") -> None:
        """A lane map naming labels the model does not have is a configuration error."""
        unknown = sorted(set(self.lanes) - set(labels))
        if unknown:
            raise BinsortError(
                "lanes name %s, which the model does not know (its labels: %s)"
                % (", ".join(unknown), ", ".join(lb for lb in labels if lb != empty))
            )

    def route(self, d: Decision) -> Decision:
        if d.confidence < self.min_confidence:
            d.lane, d.why = (
                self.reject,
                "confidence %.2f below %.2f" % (d.confidence, self.min_confidence),
            )
        elif d.label not in self.lanes:
            d.lane, d.why = self.reject, "no lane for %s" % d.label
        else:
            d.lane = self.lanes[d.label]
        return d

    def all_lanes(self) -> list:
        return sorted(set(self.lanes.values()) | {self.reject})
