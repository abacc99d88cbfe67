"""The pixel eye (edge.line.pixel_eye): a box's time from the pixels at the centre line, for a
line without a photo-eye, and the model's middle where the pixels cannot tell."""

import numpy as np
import pytest

from edge.line.config import check_config
from edge.line.decide import BoxTracker
from edge.line.pixel_eye import PixelEye
from edge.line.sources.conveyor import ConveyorSimulator
from edge.line.status import timed_by
from protocol.errors import BinsortError

LABELS = ["F06", "K11", "empty"]
BOX, EMPTY = np.array([5.0, 0.0, 0.0]), np.array([0.0, 0.0, 5.0])
PERIOD = 1 / 30


def belt_frames(n, box_at, box_tone=170.0, size=(48, 64), seed=0, axis="x", paint=()):
    """n frames of a noisy, streaky belt; box_at(i) is the box's [left, right) columns in frame
    i (None: no box; a list: several boxes). The box is 30 rows high with a band of dark 'ink'
    across its middle; `paint`: (first, end, tone) strips across the box, columns from its
    left edge."""
    rng = np.random.default_rng(seed)
    h, w = size
    frames = []
    for i in range(n):
        img = 60 + rng.normal(0, 5, size=(1, w)) + rng.normal(0, 4, size=(h, w))
        spans = box_at(i)
        for span in spans if isinstance(spans, list) else [spans]:
            if span is None:
                continue
            lo, hi = max(0, span[0]), min(w, span[1])
            if lo < hi:
                img[9:39, lo:hi] = box_tone + rng.normal(0, 4, size=(30, hi - lo))
                img[20:26, lo:hi] = 40  # the code's ink, as dark as the belt
                for first, end, tone in paint:
                    a, b = max(lo, span[0] + first), min(hi, span[0] + end)
                    img[9:39, a : max(a, b)] = tone
        img = np.clip(img, 0, 255).astype(np.uint8)
        frames.append(img.T.copy() if axis == "y" else img)
    return frames


def moving_box(start, width=24, speed=4, w=64):
    """A box entering from the right at frame `start`, `speed` columns a frame."""

    def at(i):
        left = w - (i - start) * speed
        return None if left + width <= 0 or left >= w else (left, left + width)

    return at


def crossing_time(start, width=24, speed=4, w=64):
    """When the box's centre passes the centre column (w // 2): left + width / 2 = w // 2."""
    return (start + (w - w // 2 + width / 2) / speed) * PERIOD


def run(frames, looks_box, eye=None, at=None, **hold):
    """The tracker's decisions; `at` collects the frame index each came out at."""
    tracker = BoxTracker(LABELS, pixel_eye=eye, **hold)
    out = []
    for i, img in enumerate(frames):
        d = tracker.push(i, i * PERIOD, BOX if looks_box(i) else EMPTY, image=img)
        if d is not None:
            out.append(d)
            if at is not None:
                at.append(i)
    return tracker, out


def late_model(start, lag=4, w=64, width=24, speed=4):
    """A model that reads the box only from `lag` frames after it covers the centre line to
    when it leaves: as a code on the box's trailing side reads."""
    on = start + int(np.ceil((w - w // 2) / speed)) + lag
    off = start + int((w - w // 2 + width) / speed)
    return lambda i: on <= i < off


def test_the_pixel_eye_times_the_box_where_the_model_is_late():
    frames = belt_frames(160, moving_box(100))
    truth = crossing_time(100)
    tracker, (d,) = run(frames, late_model(100), PixelEye())
    _, (by_model,) = run(frames, late_model(100))
    assert by_model.timing == "model" and by_model.t - truth > 1.5 * PERIOD  # the model is late
    assert d.timing == "image" and abs(d.t - truth) <= PERIOD
    assert d.first == by_model.first and d.last == by_model.last  # the same box, the same frames
    assert (tracker.image_timed, tracker.model_timed) == (1, 0)
    assert d.as_dict()["timing"] == "image"


def early_model(start, lead=4, w=64, width=40, speed=2):
    """A model that reads the box from when it covers the centre line until `lead` frames
    before it leaves the line: a code on the box's leading side, gone from view while the
    box's trailing end still covers the line."""
    on = start + int(np.ceil((w - w // 2) / speed))
    off = start + int((w - w // 2 + width) / speed) - lead
    return lambda i: on <= i < off


def test_a_decision_waits_a_few_frames_for_the_box_to_clear_the_line():
    wide = dict(width=40, speed=2)
    frames = belt_frames(220, moving_box(100, **wide))
    truth = crossing_time(100, **wide)
    # not held (the default): the run had not ended when the model's box did
    plain_at, held_at = [], []
    _, (plain,) = run(frames, early_model(100), PixelEye(), at=plain_at)
    assert plain.timing == "model" and plain.t - truth < -1.5 * PERIOD  # the model is early
    tracker, (d,) = run(frames, early_model(100), PixelEye(), at=held_at, hold=4, hold_s=1.0)
    assert d.timing == "image" and abs(d.t - truth) <= PERIOD
    assert (d.first, d.last, d.label) == (plain.first, plain.last, plain.label)
    assert 0 < held_at[0] - plain_at[0] <= 4  # later, by no more than it may be held
    assert (tracker.held_count, tracker.image_timed, tracker.model_timed) == (1, 1, 0)
    # the hold is capped below the frames the next box needs to be decided (enter + leave)
    assert BoxTracker(LABELS, enter=2, leave=3, hold=9, hold_s=1.0).hold == 4
    # a run that outlasts the hold, or a deadline that comes first: the model's middle, on time
    for hold, at_most in ((dict(hold=1, hold_s=1.0), 1), (dict(hold=4, hold_s=0.001), 1)):
        at = []
        tracker, (d,) = run(frames, early_model(100), PixelEye(), at=at, **hold)
        assert d.timing == "model" and d.t == plain.t and at[0] - plain_at[0] <= at_most
        assert (tracker.held_count, tracker.model_timed) == (1, 1)


def test_a_held_decision_comes_out_before_the_next_box_and_goes_with_an_abandoned_line():
    wide = dict(width=40, speed=2)
    # boxes 28 frames apart, 8 frames of belt between them at the centre line: the next box
    # is in view, and read, while the one before is held
    starts = (100, 128, 156)
    frames = belt_frames(300, lambda i: [moving_box(s, **wide)(i) for s in starts])
    readers = [early_model(s) for s in starts]
    at = []
    tracker, out = run(
        frames, lambda i: any(r(i) for r in readers), PixelEye(), at=at, hold=4, hold_s=1.0
    )
    assert [d.seq for d in out] == [0, 1, 2] and at == sorted(at)
    assert tracker.held_count == 3 and tracker.image_timed == 3
    truths = [crossing_time(s, **wide) for s in starts]
    assert all(abs(d.t - t) <= PERIOD for d, t in zip(out, truths, strict=True))
    # the source fails while a decision is held: the actuator is safe, the box is not sorted
    tracker = BoxTracker(LABELS, pixel_eye=PixelEye(), hold=4, hold_s=1.0)
    reader = early_model(100)
    for i, img in enumerate(frames[:200]):
        assert tracker.push(i, i * PERIOD, BOX if reader(i) else EMPTY, image=img) is None
        if tracker.held is not None:
            tracker.abandon()
    assert tracker.held_count == 1 and tracker.held is None


def test_a_frame_that_looks_like_belt_inside_the_box_does_not_cut_its_run():
    # a belt-toned strip 5 columns wide across the box covers the 3-column band for one frame
    frames = belt_frames(160, moving_box(100), paint=[(14, 19, 60)])
    eye = PixelEye()
    _, (d,) = run(frames, late_model(100), eye)
    assert "#.#" in "".join("#" if c else "." for _, _, c in eye.ring)  # the strip's frame
    assert d.timing == "image" and abs(d.t - crossing_time(100)) <= PERIOD


def test_the_belt_may_run_along_the_frames_height():
    frames = belt_frames(160, moving_box(100), axis="y")
    _, (d,) = run(frames, late_model(100), PixelEye("y"))
    assert d.timing == "image" and abs(d.t - crossing_time(100)) <= PERIOD
    _, (d,) = run(frames, late_model(100), PixelEye("x"))  # the wrong axis sees no crossing
    assert d.timing == "model"


def test_a_box_the_colour_of_the_belt_keeps_the_models_middle():
    frames = belt_frames(160, moving_box(100), box_tone=62.0)
    tracker, (d,) = run(frames, late_model(100), PixelEye())
    _, (by_model,) = run(frames, late_model(100))
    assert d.timing == "model" and d.t == by_model.t
    assert (tracker.image_timed, tracker.model_timed) == (0, 1)


def test_a_glimpse_or_a_sparse_run_keeps_the_models_middle():
    # a belt-toned box with a bright label at its trailing end: the eye sees only the label
    wide = dict(width=40, speed=2)
    frames = belt_frames(220, moving_box(100, **wide), box_tone=60.0, paint=[(32, 40, 200)])
    _, (d,) = run(frames, late_model(100, lag=0, **wide), PixelEye())
    assert d.timing == "model"
    # a box striped across in the belt's tone, its trailing third belt-toned: covered only
    # every other frame, and not to its end
    stripes = [(k, k + 2, 60) for k in range(2, 26, 4)] + [(26, 40, 60)]
    frames = belt_frames(220, moving_box(100, **wide), paint=stripes)
    eye = PixelEye()
    _, (d,) = run(frames, late_model(100, lag=0, **wide), eye)
    assert "#.#.#" in "".join("#" if c else "." for _, _, c in eye.ring)
    assert d.timing == "model"


def test_no_answer_before_the_belt_is_learnt_or_when_boxes_touch():
    # the first box comes before the eye has seen enough belt
    frames = belt_frames(40, moving_box(2))
    _, (d,) = run(frames, late_model(2), PixelEye())
    assert d.timing == "model"
    # two boxes nose to tail, the model reading only the second one's code: the line stays
    # covered across both, longer than the box the model saw allows
    first, second = moving_box(100, width=40, speed=2), moving_box(120, width=40, speed=2)

    def touching(i):
        spans = [s for s in (first(i), second(i)) if s]
        return (min(s[0] for s in spans), max(s[1] for s in spans)) if spans else None

    frames = belt_frames(200, touching)
    _, (d,) = run(frames, late_model(120, lag=0, width=40, speed=2), PixelEye())
    assert (d.first, d.last) == (136, 155)
    assert d.timing == "model"


def test_on_the_simulated_belt_the_pixel_eye_finds_the_box_centre_a_code_reader_misses():
    """The conveyor simulator's frames and truth: a stand-in model that starts each box three
    frames late (as a code on the box's trailing side reads). Image timing lands within a
    frame period of when the simulator says each box's centre passed; the model's middle
    does not."""
    sim = ConveyorSimulator({"boxes": "40", "seed": "3", "belt": "0.5"})
    tracker = BoxTracker(LABELS, pixel_eye=PixelEye())
    frames, decisions = [], []
    while (f := sim.read()) is not None:
        frames.append(f)
    boxes = [f.truth["box"] for f in frames]
    for i, f in enumerate(frames):
        here = boxes[i] is not None and boxes[max(0, i - 3)] == boxes[i]
        d = tracker.push(f.index, f.t, BOX if here else EMPTY, image=f.image)
        if d is not None:
            decisions.append((d, boxes[d.first]))
    errors = {"image": [], "model": []}
    for d, box in decisions:
        first = min(i for i, b in enumerate(boxes) if b == box)
        last = max(i for i, b in enumerate(boxes) if b == box)
        model_middle = (frames[d.first].t + frames[d.last].t) / 2
        assert d.first == first + 3 and d.last == last
        assert model_middle - sim.passes(box, 0.0) > PERIOD
        errors[d.timing].append(abs(d.t - sim.passes(box, 0.0)))
    assert len(decisions) >= 38 and len(errors["image"]) >= 0.8 * len(decisions)
    assert max(errors["image"]) <= PERIOD


@pytest.mark.parametrize(
    "key, value, message",
    [("timing", "photo", "timing must be image"), ("belt_axis", "z", "belt_axis must be x")],
)
def test_timing_settings_are_checked(key, value, message):
    cfg = {
        "model": {"store": "/tmp/s"},
        "source": {"url": "sim:"},
        "lanes": {"reject": "reject", "map": {"F06": "left"}},
        "decide": {key: value},
    }
    with pytest.raises(BinsortError, match=message):
        check_config(cfg)
    cfg["decide"] = {}
    assert check_config(cfg)["decide"]["timing"] == "image"
    assert check_config(cfg)["decide"]["belt_axis"] == "x"


def test_the_operator_page_says_how_boxes_were_timed():
    assert timed_by({"from": "eye", "by_image": 0, "by_model": 0}) == "the photo-eye"
    assert timed_by({"from": "model", "by_image": 0, "by_model": 0}) == "the model's frames"
    got = timed_by({"from": "image", "by_image": 29, "by_model": 1})
    assert got == "the pixels 29, the model's frames 1"
