"""Reading one still image as several views: the model input shifted a few pixels each way and
turned a few degrees, the class probabilities averaged, as the line averages the frames of a
box (edge.line.decide).

A binary net's decision moves with the input's exact position: a sign near its threshold flips
when the frame moves by a pixel, and with it the scores. On the line every box is seen in
several frames, each a little further along the belt, and its decision is the mean of their
probabilities; a still image is one frame. Its views are the same input shifted by up to
VIEW_SHIFT pixels (the edge pixel repeated, as the trainer's augmentation shifts frames: its
largest shift) and turned by VIEW_TURNS degrees about its centre (the generator turns boxes
by up to 15), so each view is a frame the model was trained on; the decision is the best
label of their mean probabilities. The default model reads its own synthetic test set at
0.947 from one view and 0.967 from five shifted ones (docs/training-notes.md, section 5,
twenty-sixth round); two demo-sized models read 0.942 and 0.943 from five and 0.943 and 0.947
from nine, the four turned views adding most where the renderers' boxes are turned further
than the generator turns them (twenty-seventh round). The scores of each view are the
engine's exact integers; only the averaging is float.

The command lines read VIEW_SETS to build their parsers, so numpy is imported by the functions
that use it, not by the module: a parser on a Pi Zero does not wait for it.
"""

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

VIEW_SHIFT = 4  # pixels of the model input: the trainer's augmentation shifts by up to 4
# degrees of the turned views: the generator turns its boxes up to 15 degrees (and some to 25),
# so a turned view of a frame the model reads is, like a shifted one, a frame it was trained on
VIEW_TURNS = (6, 10)

_SHIFTS = (
    (0, 0, 0),
    (VIEW_SHIFT, 0, 0),
    (-VIEW_SHIFT, 0, 0),
    (0, VIEW_SHIFT, 0),
    (0, -VIEW_SHIFT, 0),
)
# (dx, dy, degrees) of each view: moved dx right and dy down, then turned `degrees`
# anticlockwise about the centre; the first view is always the input as given
VIEW_SETS = {
    1: ((0, 0, 0),),
    3: ((0, 0, 0), (VIEW_SHIFT, VIEW_SHIFT, 0), (-VIEW_SHIFT, -VIEW_SHIFT, 0)),
    5: _SHIFTS,
    7: _SHIFTS + ((0, 0, VIEW_TURNS[0]), (0, 0, -VIEW_TURNS[0])),
    9: _SHIFTS + tuple((0, 0, sign * t) for t in VIEW_TURNS for sign in (1, -1)),
}
DEFAULT_VIEWS = 9


def add_views_option(parser) -> None:
    """`--views N` on an argparse parser: `binsort eval` and `binsort-edge classify` read
    still images."""
    parser.add_argument(
        "--views",
        type=int,
        choices=sorted(VIEW_SETS),
        default=DEFAULT_VIEWS,
        help="read each image as N views and decide from their mean probabilities: 3 and 5 "
        "shift it up to %d pixels, 7 also turns it %s degrees each way, 9 also %s (default %d; "
        "1: the image once, as one camera frame)"
        % (VIEW_SHIFT, VIEW_TURNS[0], " and ".join(map(str, VIEW_TURNS)), DEFAULT_VIEWS),
    )


def shifted(images: "np.ndarray", dx: int, dy: int) -> "np.ndarray":
    """uint8 (N, H, W) inputs moved right by dx and down by dy pixels (negative: left, up); the
    pixels that come in from outside repeat the edge: out[y, x] = in[clip(y - dy), clip(x - dx)]."""
    pad = max(abs(dx), abs(dy))
    return _window(_edge_padded(images, pad), pad, dx, dy)


def _edge_padded(images: "np.ndarray", pad: int) -> "np.ndarray":
    import numpy as np

    return np.pad(images, ((0, 0), (pad, pad), (pad, pad)), mode="edge")


def _window(padded: "np.ndarray", pad: int, dx: int, dy: int) -> "np.ndarray":
    """The view moved by (dx, dy) out of inputs padded by `pad` >= |dx|, |dy| on every side."""
    import numpy as np

    h, w = padded.shape[1] - 2 * pad, padded.shape[2] - 2 * pad
    return np.ascontiguousarray(padded[:, pad - dy : pad - dy + h, pad - dx : pad - dx + w])


_FRACTION = 8  # bits of a source position's fraction: positions in 1/256 pixel
_TRIG = 14  # bits of the turn's cosine and sine


@lru_cache(maxsize=16)
def _turn_taps(h: int, w: int, degrees: int) -> tuple:
    """For each output pixel of an (h, w) image turned `degrees` anticlockwise about its
    centre: the four source pixels' flat indices (row-major, clipped to the image: the edge
    repeats) and their bilinear weights in 1/2**16 (int32), all integers. The source position
    is worked out in integers from the cosine and sine rounded to 1/2**14, so it is the same on
    every machine. Cached: classify and eval turn every batch by the same few angles."""
    import math

    import numpy as np

    c = round(math.cos(math.radians(degrees)) * (1 << _TRIG))
    s = round(math.sin(math.radians(degrees)) * (1 << _TRIG))
    # twice each pixel centre's offset from the image's centre, in pixels (integers)
    y2 = (2 * np.arange(h, dtype=np.int64) + 1 - h)[:, None]
    x2 = (2 * np.arange(w, dtype=np.int64) + 1 - w)[None, :]
    # the source of an output pixel is it turned back: clockwise by `degrees` (y points down)
    shift = _TRIG + 1 - _FRACTION  # from twice-offsets times 2**14 to 1/256 pixel
    half = 1 << (shift - 1)
    sx = ((c * x2 - s * y2 + half) >> shift) + (w - 1) * (1 << (_FRACTION - 1))
    sy = ((s * x2 + c * y2 + half) >> shift) + (h - 1) * (1 << (_FRACTION - 1))
    one = 1 << _FRACTION
    x0, fx = sx >> _FRACTION, sx & (one - 1)
    y0, fy = sy >> _FRACTION, sy & (one - 1)
    cols = [np.clip(x0 + k, 0, w - 1) for k in (0, 1)]
    rows = [np.clip(y0 + k, 0, h - 1) for k in (0, 1)]
    taps = [(rows[i] * w + cols[j]).ravel() for i in (0, 1) for j in (0, 1)]
    wy, wx = (one - fy, fy), (one - fx, fx)
    weights = [(wy[i] * wx[j]).ravel().astype(np.int32) for i in (0, 1) for j in (0, 1)]
    return taps, weights


def turned(images: "np.ndarray", degrees: int) -> "np.ndarray":
    """uint8 (N, H, W) inputs turned `degrees` anticlockwise about their centre, each output
    pixel the bilinear mix of the four around its source, rounded half up; a source outside the
    image takes the nearest edge pixel, as a shifted view does. Exact integer arithmetic (a
    pixel times its weight and their sum stay below 2**24), 32 images at a time so that the
    sums stay in cache."""
    import numpy as np

    images = np.asarray(images, dtype=np.uint8)
    n, h, w = images.shape
    if degrees == 0:
        return images.copy()
    taps, weights = _turn_taps(h, w, int(degrees))
    flat = images.reshape(n, h * w)
    out = np.empty_like(flat)
    half = 1 << (2 * _FRACTION - 1)
    for start in range(0, n, 32):
        block = flat[start : start + 32]
        total = np.full(block.shape, half, dtype=np.int32)
        for tap, weight in zip(taps, weights, strict=True):
            total += np.take(block, tap, axis=1) * weight
        out[start : start + 32] = total >> (2 * _FRACTION)
    return out.reshape(n, h, w)


def view_probabilities(engine, images: "np.ndarray", views: int = DEFAULT_VIEWS) -> tuple:
    """(mean class probabilities over the views, float64 (N, classes); the integer scores of
    the input as given, int64 (N, classes)) for uint8 (N, H, W) model inputs."""
    if views not in VIEW_SETS:
        raise ValueError("views must be one of %s" % ", ".join(map(str, VIEW_SETS)))
    import numpy as np

    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 2:
        images = images[None]
    given = engine.scores(images)
    total = engine.probabilities(given)
    if views > 1:
        padded = _edge_padded(images, VIEW_SHIFT)  # once for every view: each is a window of it
        for dx, dy, degrees in VIEW_SETS[views][1:]:
            view = _window(padded, VIEW_SHIFT, dx, dy)
            if degrees:
                view = turned(view, degrees)
            total += engine.probabilities(engine.scores(view))
    return total / views, given
