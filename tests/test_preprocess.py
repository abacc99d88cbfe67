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


def test_a_sixteen_bit_frame_is_scaled_to_eight_bits_not_clipped(tmp_path):
    from PIL import Image

    levels = np.array([[0, 257, 32896, 40000, 65280, 65535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    # 16-bit PNGs are what scanners, machine-vision cameras and OpenCV pipelines write;
    # Pillow's convert("L") clips them at 255, which made every such frame nearly white
    assert load_image(str(tmp_path / "deep.png")).tolist() == [[0, 1, 128, 156, 254, 255]]


def test_a_phone_photo_is_read_upright_by_its_exif_orientation(tmp_path):
    from PIL import Image

    stored = np.full((20, 40), 255, dtype=np.uint8)
    stored[:, :10] = 0  # the left quarter dark as stored; a phone held upright shows it on top
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    shown = load_image(str(tmp_path / "phone.png"))
    assert np.array_equal(shown, np.rot90(stored, k=-1))
    assert shown.shape == (40, 20) and shown[:10].max() == 0 and shown[10:].min() == 255


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_laid_on_white(tmp_path, mode):
    from PIL import Image

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # transparent black, as most programs store it
    rgba[2:6, 2:6] = (0, 0, 0, 255)  # an opaque black mark
    rgba[0, 0] = (0, 0, 0, 128)  # half covered: half way to white
    image = Image.fromarray(rgba, "RGBA")
    if mode == "P":  # a palette image with one transparent index (GIF-style)
        image = Image.fromarray(np.where(rgba[:, :, 3] == 255, 1, 0).astype(np.uint8), "P")
        image.putpalette([0, 0, 0, 0, 0, 0])
        image.info["transparency"] = 0
    elif mode == "LA":
        image = image.convert("LA")
    image.save(tmp_path / "clear.png")
    grey = to_grey(load_image(str(tmp_path / "clear.png")))
    assert grey[2:6, 2:6].max() == 0 and grey[7, 7] == 255
    assert grey[0, 0] == (127 if mode != "P" else 255)


def test_a_floating_point_image_is_refused_in_one_line(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(BinsortError, match="floating-point image has no stated range"):
        load_image(str(tmp_path / "float.tiff"))


def test_an_oversized_image_is_a_clean_error_not_a_traceback(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("L", (30, 30)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 900 pixels: past twice the limit
    with pytest.raises(BinsortError, match="cannot read image .*huge.png.*decompression bomb"):
        load_image(str(tmp_path / "huge.png"))


def _grey_png(path, width: int, height: int) -> None:
    """A real grey PNG of width x height black pixels, written without holding them."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte and the row
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat))
        f.write(chunk(b"IEND", b""))


def test_an_image_too_large_for_a_pi_is_refused_from_its_header_before_decoding(
    tmp_path, monkeypatch
):
    import edge.imaging.preprocess as pre

    # 72 million pixels, under Pillow's own bound (179 million): refused by binsort's, with
    # the size and what to do, before a pixel is decoded
    _grey_png(tmp_path / "wide.png", 9000, 8000)
    decoded = []
    from PIL import ImageFile

    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda im: decoded.append(1) or real_load(im))
    with pytest.raises(BinsortError, match=r"wide.png: it is 9000 x 8000 pixels, .*scale it"):
        load_image(str(tmp_path / "wide.png"))
    assert not decoded
    # at the bound an image is read; one row more is refused
    _grey_png(tmp_path / "edge.png", 40, 30)
    _grey_png(tmp_path / "past.png", 40, 31)
    monkeypatch.setattr(pre, "MAX_IMAGE_PIXELS", 1200)
    assert load_image(str(tmp_path / "edge.png")).shape == (30, 40)
    with pytest.raises(BinsortError, match="40 x 31 pixels"):
        load_image(str(tmp_path / "past.png"))
