"""Camera frame -> model input: the one preprocessing both the trainer and the edge use.

A frame of any size, grey (H, W) or colour (H, W, 3|4) uint8, becomes a (height, width) uint8 grey
image: integer luma, a centre crop to the model's aspect ratio, then an area-average resize.
Every step is exact integer arithmetic, so the model sees the same bytes on every machine
(the resize runs through float64 BLAS, which is exact here because every partial sum is an
integer below 2**53, whatever order the library adds in). The format of the `preprocess`
metadata that names these parameters is in docs/format.md, section "Metadata".
"""

from functools import lru_cache

import numpy as np

from protocol.errors import BinsortError

PREPROCESS_KIND = "grey-centre-crop-area"


def to_grey(frame: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma, rounded: (299 R + 587 G + 114 B + 500) // 1000. Grey input passes."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise BinsortError("frame must be uint8 pixels, got %s" % frame.dtype)
    if frame.ndim == 2:
        return frame
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        rgb = frame[:, :, :3].astype(np.int32)
        luma = (299 * rgb[:, :, 0] + 587 * rgb[:, :, 1] + 114 * rgb[:, :, 2] + 500) // 1000
        return luma.astype(np.uint8)
    raise BinsortError(
        "frame must be (H, W) grey or (H, W, 3|4) colour, got shape %s" % (frame.shape,)
    )


def centre_crop(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred window of the frame with the aspect ratio height:width."""
    h, w = grey.shape
    if h * width > w * height:  # frame is taller than the model input
        ch = (w * height) // width
        top = (h - ch) // 2
        return grey[top : top + ch, :]
    cw = (h * width) // height
    left = (w - cw) // 2
    return grey[:, left : left + cw]


@lru_cache(maxsize=16)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) integer overlaps of output cell i, [i*n_in, (i+1)*n_in), with input pixel j,
    [j*n_out, (j+1)*n_out), in units of 1/n_out input pixel. Each row sums to n_in."""
    i = np.arange(n_out)[:, None]
    j = np.arange(n_in)[None, :]
    lo = np.maximum(i * n_in, j * n_out)
    hi = np.minimum((i + 1) * n_in, (j + 1) * n_out)
    return np.maximum(hi - lo, 0).astype(np.float64)


def area_resize(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """Average each output cell's exact footprint, rounding half up."""
    h, w = grey.shape
    if (h, w) == (height, width):
        return grey
    total = _area_weights(h, height) @ grey.astype(np.float64) @ _area_weights(w, width).T
    d = h * w
    return ((2 * total.astype(np.int64) + d) // (2 * d)).astype(np.uint8)


def full_range(luma: np.ndarray) -> np.ndarray:
    """Limited-range ("video", 16-235) luma to full range (0-255), as training images are:
    (255 (Y - 16) + 109) // 219, clipped. A camera's YUV stream in a video colour space
    (Picamera2's default for small video sizes, SMPTE 170M) is limited range."""
    y = luma.astype(np.int32)
    return np.clip((255 * (y - 16) + 109) // 219, 0, 255).astype(np.uint8)


def preprocess(
    frame: np.ndarray, height: int, width: int, limited_range: bool = False
) -> np.ndarray:
    """Frame (any size, grey or colour uint8) -> (height, width) uint8 model input.
    `limited_range`: the frame is limited-range luma (a camera's YUV), made full range."""
    grey = to_grey(frame)
    if grey.shape[0] < 1 or grey.shape[1] < 1:
        raise BinsortError("frame is empty")
    crop = centre_crop(grey, height, width)
    if limited_range:
        crop = full_range(crop)
    return area_resize(crop, height, width)


# the most pixels an image file may have: a 48-megapixel phone photo is read, a file whose header
# asks for more is refused before it is decoded (a Pi Zero has 512 MB, and an image is held
# as RGB and grey at once while it is read); Pillow's own bound, 179 million, is past that
MAX_IMAGE_PIXELS = 64_000_000


def load_image(path) -> np.ndarray:
    """Read an image file into a uint8 array as an image viewer shows it: grey stays grey
    (H, W), anything else becomes RGB (H, W, 3). What cameras, phones and other renderers
    write is read for what it means, not for its bytes: the EXIF orientation a phone records
    is applied (its pixels are stored on their side), 16-bit samples are scaled to 8 bits
    (Pillow's own conversion clips them, which turns a 16-bit frame white), and transparent
    pixels are laid on white (their stored colour is often black). Floating-point images,
    whose range no file states, are refused, and so is a file of more than MAX_IMAGE_PIXELS.
    Any file Pillow cannot parse is one BinsortError."""
    import struct

    from PIL import Image, ImageOps

    # what Pillow's parsers raise for damaged, truncated or oversized files
    damaged = (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        struct.error,
        Image.DecompressionBombError,
    )
    try:
        with Image.open(path) as im:
            w, h = im.size  # from the header: refuse before decoding what would not fit
            if w * h > MAX_IMAGE_PIXELS:
                raise BinsortError(
                    "it is %d x %d pixels, more than the %d million binsort reads: scale it down"
                    % (w, h, MAX_IMAGE_PIXELS // 1_000_000)
                )
            im.load()
            return _pixels(ImageOps.exif_transpose(im))
    except (BinsortError, *damaged) as e:
        raise BinsortError(
            "cannot read image %s: %s" % (path, str(e) or type(e).__name__)
        ) from None


def _pixels(im) -> np.ndarray:
    """A loaded, upright Pillow image -> uint8 grey or RGB (see load_image)."""
    from PIL import Image

    if im.mode == "F":
        raise BinsortError("a floating-point image has no stated range: save it as 8 or 16 bits")
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):  # 16-bit grey; Pillow < 11 says "I"
        wide = np.asarray(im, dtype=np.int64)
        return ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if "A" in im.getbands() or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_inputs(paths, height: int, width: int) -> np.ndarray:
    """Image files -> (N, height, width) uint8 model inputs."""
    if not paths:
        return np.zeros((0, height, width), dtype=np.uint8)
    return np.stack([preprocess(load_image(p), height, width) for p in paths])
