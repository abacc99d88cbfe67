"""A still image read as views (edge.imaging.views): the shift and the turn themselves, and the
views staying within what the trainer's augmentation and the generator show the model."""

import inspect

import numpy as np
import pytest

from edge.imaging.views import DEFAULT_VIEWS, VIEW_SETS, VIEW_SHIFT, VIEW_TURNS, shifted, turned


def test_a_view_moves_the_image_and_repeats_its_edge():
    images = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)
    for dx, dy in ((2, 0), (-2, 0), (0, 3), (0, -3), (1, -2)):
        want = np.empty_like(images)
        for y in range(5):
            for x in range(6):
                want[:, y, x] = images[:, min(max(y - dy, 0), 4), min(max(x - dx, 0), 5)]
        assert np.array_equal(shifted(images, dx, dy), want), (dx, dy)
    assert np.array_equal(shifted(images, 0, 0), images)


@pytest.mark.parametrize("side", [5, 6, 144])
def test_a_quarter_turn_is_exactly_a_quarter_turn_anticlockwise(side):
    """Right angles land every source on a pixel centre, so the bilinear mix must give the
    pixels back: the turn's centre, direction and rounding are all in this check."""
    images = np.random.default_rng(side).integers(0, 256, (3, side, side), dtype=np.uint8)
    assert np.array_equal(turned(images, 90), np.rot90(images, 1, axes=(1, 2)))
    assert np.array_equal(turned(images, -90), np.rot90(images, -1, axes=(1, 2)))
    assert np.array_equal(turned(images, 180), images[:, ::-1, ::-1])
    assert np.array_equal(turned(images, 0), images)


def test_a_small_turn_is_pillows_bilinear_turn_and_the_corners_repeat_the_edge():
    """Against Pillow's own bilinear rotate (an implementation written apart from this one):
    within one grey level wherever both sample inside the image. Where the source falls
    outside, the view takes the nearest edge pixel, as a shifted view does, not a fill colour."""
    from PIL import Image, ImageFilter

    noise = np.random.default_rng(1).integers(0, 256, (144, 144), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(3)))
    for degrees in (6, -10):
        ours = turned(smooth[None], degrees)[0].astype(int)
        pillow = np.asarray(Image.fromarray(smooth).rotate(degrees, Image.BILINEAR)).astype(int)
        inner = slice(16, 128)
        assert np.abs(ours[inner, inner] - pillow[inner, inner]).max() <= 1, degrees
    # a frame dark at the edges and white inside: a turned view's corners stay dark
    frame = np.zeros((1, 40, 40), dtype=np.uint8)
    frame[0, 1:-1, 1:-1] = 255
    view = turned(frame, 10)[0]
    assert view[0, 0] == view[-1, -1] == 0 and view[20, 20] == 255


def test_every_view_is_a_frame_the_model_was_trained_on():
    """The views are frames the model was trained on: the augmentation moves each training
    frame by up to its `shift` pixels and the generator turns each box up to TURN degrees, and
    no view moves or turns further. The first view is the image as given (its scores are the
    ones `classify` prints)."""
    from edge.imaging.box_images import TURN
    from host.train import augment

    assert inspect.signature(augment).parameters["shift"].default == VIEW_SHIFT
    assert DEFAULT_VIEWS in VIEW_SETS
    for n, views in VIEW_SETS.items():
        assert len(views) == len(set(views)) == n and views[0] == (0, 0, 0)
        assert all(max(abs(dx), abs(dy)) <= VIEW_SHIFT for dx, dy, _ in views)
        assert all(abs(degrees) in (0, *VIEW_TURNS) for _, _, degrees in views)
    assert max(VIEW_TURNS) < TURN
