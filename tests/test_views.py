"""A still image read as shifted views (edge.imaging.views): the shift itself, and the views
staying within what the trainer's augmentation shows the model."""

import inspect

import numpy as np

from edge.imaging.views import DEFAULT_VIEWS, VIEW_SETS, VIEW_SHIFT, shifted


def test_a_view_moves_the_image_and_repeats_its_edge():
    images = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)
    for dx, dy in ((2, 0), (-2, 0), (0, 3), (0, -3), (1, -2)):
        want = np.empty_like(images)
        for y in range(5):
            for x in range(6):
                want[:, y, x] = images[:, min(max(y - dy, 0), 4), min(max(x - dx, 0), 5)]
        assert np.array_equal(shifted(images, dx, dy), want), (dx, dy)
    assert np.array_equal(shifted(images, 0, 0), images)


def test_every_view_is_a_shift_the_trainer_draws():
    """The views are frames the model was trained on: the augmentation moves each training
    frame by up to its `shift` pixels, and no view moves further. The first view is the image
    as given (its scores are the ones `classify` prints)."""
    from host.train import augment

    assert inspect.signature(augment).parameters["shift"].default == VIEW_SHIFT
    assert DEFAULT_VIEWS in VIEW_SETS
    for n, views in VIEW_SETS.items():
        assert len(views) == len(set(views)) == n and views[0] == (0, 0)
        assert all(max(abs(dx), abs(dy)) <= VIEW_SHIFT for dx, dy in views)
