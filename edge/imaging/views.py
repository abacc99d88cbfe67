"""Reading one still image as several views: the model input shifted a few pixels each way,
the class probabilities averaged, as the line averages the frames of a box (edge.line.decide).

A binary net's decision moves with the input's exact position: a sign near its threshold flips
when the frame moves by a pixel, and with it the scores. On the line every box is seen in
several frames, each a little further along the belt, and its decision is the mean of their
probabilities; a still image is one frame. Its views are the same input shifted by up to
VIEW_SHIFT pixels (the edge pixel repeated, as the trainer's augmentation shifts frames: its
largest shift), so each view is a frame the model was trained on; the decision is the best
label of their mean probabilities. The default model reads its own synthetic test set at
0.947 from one view and 0.967 from five (docs/training-notes.md, section 5, twenty-sixth
round). The scores of each view are the engine's exact integers; only the averaging is float.

The command lines read VIEW_SETS to build their parsers, so numpy is imported by the functions
that use it, not by the module: a parser on a Pi Zero does not wait for it.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

VIEW_SHIFT = 4  # pixels of the model input: the trainer's augmentation shifts by up to 4

_STEPS = (0, -VIEW_SHIFT, VIEW_SHIFT)
# (dx, dy) of each view; the first is always the input as given
VIEW_SETS = {
    1: ((0, 0),),
    3: ((0, 0), (VIEW_SHIFT, VIEW_SHIFT), (-VIEW_SHIFT, -VIEW_SHIFT)),
    5: ((0, 0), (VIEW_SHIFT, 0), (-VIEW_SHIFT, 0), (0, VIEW_SHIFT), (0, -VIEW_SHIFT)),
    9: tuple((dx, dy) for dy in _STEPS for dx in _STEPS),
}
DEFAULT_VIEWS = 5


def add_views_option(parser) -> None:
    """`--views N` on an argparse parser: `binsort eval` and `binsort-edge classify` read
    still images."""
    parser.add_argument(
        "--views",
        type=int,
        choices=sorted(VIEW_SETS),
        default=DEFAULT_VIEWS,
        help="read each image as N views, shifted up to %d pixels, and decide from their mean "
        "probabilities (default %d; 1: the image once, as one camera frame)"
        % (VIEW_SHIFT, DEFAULT_VIEWS),
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
        for dx, dy in VIEW_SETS[views][1:]:
            total += engine.probabilities(engine.scores(_window(padded, VIEW_SHIFT, dx, dy)))
    return total / views, given
