from fractions import Fraction

import numpy as np
import pytest

from edge.imaging.preprocess import area_resize, centre_crop, load_image, preprocess, to_grey
from protocol.errors import BinsortError


def _slow_area_resize(img, h, w):
    """Exact rational area average, rounded half up: the definition area_resize must meet."""
    H, W = img.shape
    out = np.zeros((h, w), dtype=np.uint8)
    for i in range(h):
        for j in range(w):
            total = Fraction(0)
            for y in range(H):
                oy = max(0, min((i + 1) * H, (y + 1) * h) - max(i * H, y * h))
                for x in range(W):
                    ox = max(0, min((j + 1) * W, (x + 1) * w) - max(j * W, x * w))
                    total += oy * ox * int(img[y, x])
            mean = total / (H * W)
            out[i, j] = int(mean + Fraction(1, 2)) if mean.denominator != 1 else int(mean)
    return out


@pytest.mark.parametrize("shape,size", [((13, 17), (5, 5)), ((10, 10), (4, 7)), ((6, 9), (6, 9))])
def test_area_resize_is_the_exact_rounded_area_average(shape, size):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(area_resize(img, *size), _slow_area_resize(img, *size))


def test_colour_frames_become_integer_luma():
    frame = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    assert to_grey(frame).tolist() == [[76, 150, 29, 18]]


def test_centre_crop_keeps_the_model_aspect_ratio():
    assert centre_crop(np.zeros((480, 640), np.uint8), 64, 64).shape == (480, 480)
    assert centre_crop(np.zeros((100, 40), np.uint8), 32, 32).shape == (40, 40)


def test_any_frame_size_gives_the_model_input_size():
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    out = preprocess(frame, 64, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8


def test_unreadable_image_is_a_clean_error(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(BinsortError, match="cannot read image"):
        load_image(str(bad))
