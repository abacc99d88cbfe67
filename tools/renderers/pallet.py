"""Held-out renderer 5: codes sprayed through a stencil onto wooden pallets and crates (see
README.md here).

A stencil cannot hold an island, so a letter's closed counter (the hole of 0, 6, 9) hangs from
bridges: thin gaps cut through the stroke above and below each counter. Here the letters are a
bold sans from the machine's fonts, and the bridges are cut from the glyph itself: each counter
is found by flood-filling the background from outside, and the ink next to it is cut at its
centre. The paint is sprayed: soft edges, a halo of overspray and speckle around the strokes,
now and then a drip running down. The wood is planks with their grain, knots and the dark gaps
between boards (a gap may run through the code), or a plywood sheet. A pallet carries a
phytosanitary stamp (a framed mark with letters and numbers) that is not a code, beside a code
or on its own. The frame is RGB, 160x120 (4:3, so the centre crop runs too), seen a little off
square, defocused and noisy. `empty`: bare wood, or wood with only the stamp.
"""

import glob
import hashlib
import math
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

W, H = 160, 120
SS = 3  # supersampling of the drawing
# bold sans faces that tools/setup-system installs; the bridges and the spray make them stencils
_FACES = (
    "LiberationSans-Bold.ttf",
    "DejaVuSans-Bold.ttf",
    "RobotoCondensed-Bold.ttf",
    "FreeSansBold.ttf",
)


def _faces() -> tuple:
    found = {}
    for path in sorted(glob.glob("/usr/share/fonts/truetype/**/*.ttf", recursive=True)):
        found.setdefault(os.path.basename(path), path)
    return tuple(found[n] for n in _FACES if n in found)


FONT_FILES = _faces()
# paint colours, RGB; each is used only on wood it stands out from (luma differs by 45 or more)
PAINTS = ((25, 25, 28), (30, 45, 110), (170, 30, 30), (235, 235, 230), (230, 200, 40))


def _rng(seed: int, label: str, index: int) -> random.Random:
    key = hashlib.blake2b(("pallet|%d|%s|%d" % (seed, label, index)).encode(), digest_size=8)
    return random.Random(int.from_bytes(key.digest(), "big"))


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def bridged(mask: np.ndarray, width: int) -> np.ndarray:
    """A glyph's ink (bool, H x W) with a stencil's bridges: where background is closed in by
    ink (a counter), the ink run directly above and directly below it is cut, `width` columns
    wide at the counter's centre."""
    img = Image.fromarray(np.pad(mask, 1).astype(np.uint8) * 255).copy()  # writable
    ImageDraw.floodfill(img, (0, 0), 128)  # the background reachable from outside
    hole = np.asarray(img)[1:-1, 1:-1] == 0
    out = mask.copy()
    if not hole.any():
        return out
    # each counter on its own: columns of hole pixels split where a column has none
    cols = np.flatnonzero(hole.any(axis=0))
    groups = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    for group in groups:
        band = hole[:, group[0] : group[-1] + 1]
        rows = np.flatnonzero(band.any(axis=1))
        # counters stacked in the same columns (an 8) are cut one by one
        for part in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1):
            centre = int(round(group.mean()))
            for x in range(
                max(0, centre - width // 2), min(mask.shape[1], centre + width - width // 2)
            ):
                for start, step in ((part[0] - 1, -1), (part[-1] + 1, 1)):
                    y = start
                    while 0 <= y < mask.shape[0] and mask[y, x]:
                        out[y, x] = False
                        y += step
    return out


def _stencil(rng: random.Random, code: str, h: int) -> np.ndarray:
    """`code` as stencil ink (float 0-1), its capitals `h` pixels high."""
    if not FONT_FILES:
        raise RuntimeError("pallet renderer: none of %s found (tools/setup-system)" % (_FACES,))
    font = ImageFont.truetype(rng.choice(FONT_FILES), int(h * 1.38))
    glyphs = []
    for ch in code:
        left, top, right, bottom = font.getbbox(ch)
        img = Image.new("L", (right - left + 6, bottom - top + 6), 0)
        ImageDraw.Draw(img).text((3 - left, 3 - top), ch, font=font, fill=255)
        img = img.crop(img.getbbox())
        img = img.resize((max(1, round(img.width * h / img.height)), h), Image.LANCZOS)
        ink = np.asarray(img) > 127
        glyphs.append(bridged(ink, max(2, int(h * rng.uniform(0.08, 0.13)))))
    gap = max(2, int(h * rng.uniform(0.12, 0.3)))
    width = sum(g.shape[1] for g in glyphs) + gap * (len(glyphs) - 1)
    out = np.zeros((h, width), np.float32)
    x = 0
    for g in glyphs:
        out[:, x : x + g.shape[1]] = g
        x += g.shape[1] + gap
    return out


def _wood(rng: random.Random, nrng: np.random.Generator, w: int, h: int) -> tuple:
    """(RGB float field of planks or plywood, its mean luma)."""
    base = np.asarray(
        rng.choice(
            [(200, 165, 120), (175, 135, 90), (150, 110, 70), (215, 190, 150), (120, 90, 60)]
        ),
        np.float64,
    )
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.zeros((h, w))
    if rng.random() < 0.7:  # planks across the frame, their grain along them
        plank = int(h * rng.uniform(0.3, 0.5))
        offset = rng.randint(0, plank)
        edge = (ys + offset) % plank
        board = ((ys + offset) // plank).astype(int)
        tones = nrng.normal(0, 14, board.max() + 2)
        field += tones[board]
        period = rng.uniform(4, 10) * SS
        wobble = np.sin(xs / (rng.uniform(40, 90) * SS) + board) * rng.uniform(2, 8) * SS
        field += rng.uniform(6, 14) * np.sin(2 * math.pi * (ys + wobble) / period)
        gap = rng.uniform(1.5, 4.5) * SS
        field -= np.where(edge < gap, rng.uniform(70, 110), 0.0)  # the dark gap between boards
        for _ in range(rng.randint(0, 2)):  # knots
            kx, ky = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(3, 7) * SS
            d = np.hypot((xs - kx) / 1.6, ys - ky)
            field -= 40 * np.exp(-((d / r) ** 2)) * (1 + 0.4 * np.sin(d / 2))
    else:  # plywood: a sheet with long soft grain
        field += 6 * np.sin(2 * math.pi * (ys + 10 * np.sin(xs / 150)) / rng.uniform(20, 60))
    field += nrng.normal(0, 3, (h, w))
    rgb = base[None, None, :] + field[:, :, None] * (base / base.mean())[None, None, :]
    return rgb, _luma(base)


def _stamp(rng: random.Random, draw: ImageDraw.ImageDraw, cx: int, cy: int, h: int) -> None:
    """A framed phytosanitary-style mark: letters and numbers that are not a box code."""
    face = rng.choice(FONT_FILES) if FONT_FILES else None
    small = ImageFont.truetype(face, h) if face else ImageFont.load_default(size=h)
    lines = [
        "%s-%s %d"
        % (
            rng.choice(["DE", "PL", "NL", "FR", "IT"]),
            rng.choice(["NW", "BY", "HE"]),
            rng.randint(100, 99999),
        ),
        "%s %s" % (rng.choice(["HT", "KD", "HT DB"]), rng.choice(["IPPC", "EPAL", "EUR"])),
    ]
    boxes = [draw.textbbox((0, 0), t, font=small) for t in lines]
    tw = max(b[2] - b[0] for b in boxes)
    th = sum(b[3] - b[1] for b in boxes) + h // 3
    x0, y0 = cx - tw // 2 - h // 3, cy - th // 2 - h // 3
    ink = (30, 30, 30)
    draw.rectangle(
        [x0, y0, x0 + tw + 2 * (h // 3), y0 + th + 2 * (h // 3)], outline=ink, width=max(2, h // 8)
    )
    y = y0 + h // 3
    for text, b in zip(lines, boxes, strict=True):
        draw.text((x0 + h // 3 - b[0], y - b[1]), text, font=small, fill=ink)
        y += b[3] - b[1] + h // 3


def _spray(rng: random.Random, nrng: np.random.Generator, ink: np.ndarray) -> np.ndarray:
    """Paint cover (0-1) of stencil `ink` sprayed: soft edges, overspray halo, speckle, drips."""
    img = Image.fromarray((ink * 255).astype(np.uint8))
    soft = (
        np.asarray(img.filter(ImageFilter.GaussianBlur(SS * rng.uniform(0.3, 0.9))), np.float32)
        / 255
    )
    halo = (
        np.asarray(img.filter(ImageFilter.GaussianBlur(SS * rng.uniform(2, 5))), np.float32) / 255
    )
    speckle = (nrng.random(ink.shape) < halo * rng.uniform(0.05, 0.25)).astype(np.float32)
    cover = np.maximum(soft, np.maximum(halo * rng.uniform(0.1, 0.35), speckle * 0.8))
    if rng.random() < 0.3:  # drips from the lowest ink
        bottom = np.flatnonzero(ink.any(axis=1))
        if len(bottom):
            y = bottom[-1]
            xs = np.flatnonzero(ink[y])
            for x in rng.sample(list(xs), min(len(xs), rng.randint(1, 3))):
                length = int(ink.shape[0] * rng.uniform(0.1, 0.4))
                cover[y : y + length, max(0, x - 1) : x + 2] = np.maximum(
                    cover[y : y + length, max(0, x - 1) : x + 2], 0.85
                )
    patchy = 1 - rng.uniform(0, 0.3) * nrng.random(ink.shape).astype(np.float32)  # thin coats
    return np.clip(cover * patchy, 0, 1)


def render(label: str, index: int, seed: int = 0) -> Image.Image:
    rng = _rng(seed, label, index)
    nrng = np.random.default_rng(rng.getrandbits(32))
    w, h = W * SS, H * SS
    wood, wood_luma = _wood(rng, nrng, w, h)
    canvas = Image.fromarray(np.clip(wood, 0, 255).astype(np.uint8), "RGB")
    code = label != "empty"
    stamp = rng.random() < (0.3 if code else 0.5)
    if stamp:  # beside a code: above or below it, clear of it; on its own: anywhere central
        sx = w // 2 + rng.randint(-w // 4, w // 4)
        sy = h // 2 + (
            rng.choice((-1, 1)) * int(h * rng.uniform(0.36, 0.4))
            if code
            else rng.randint(-h // 6, h // 6)
        )
        _stamp(rng, ImageDraw.Draw(canvas), sx, sy, int(h * rng.uniform(0.05, 0.07)))
    if code:
        ink = _stencil(rng, label, int(h * rng.uniform(0.18, 0.32)))
        paints = [p for p in PAINTS if abs(_luma(p) - wood_luma) >= 45]
        paint = np.asarray(rng.choice(paints), np.float32)
        layer = np.zeros((h, w), np.float32)
        ch, cw = ink.shape
        pad = ch  # room for the halo and drips
        x0 = (w - cw) // 2 + rng.randint(-w // 14, w // 14)
        y0 = (h - ch) // 2 + rng.randint(-h // 10, h // 10)
        layer[y0 : y0 + ch, x0 : x0 + cw] = ink
        ys, xs = slice(max(0, y0 - pad), y0 + ch + pad), slice(max(0, x0 - pad), x0 + cw + pad)
        layer[ys, xs] = _spray(rng, nrng, layer[ys, xs])
        a = np.asarray(canvas, np.float32)
        a = a * (1 - layer[:, :, None]) + paint[None, None, :] * layer[:, :, None]
        canvas = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    # a camera a little off square to the pallet: turned and in mild perspective
    canvas = canvas.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, fillcolor=(60, 60, 60))
    k = 0.04 * w
    quad = [rng.uniform(-k, k) + c for c in (0, 0, 0, h, w, h, w, 0)]
    canvas = canvas.transform(
        (w, h), Image.QUAD, quad, resample=Image.BILINEAR, fillcolor=(60, 60, 60)
    )
    out = canvas.resize((W, H), Image.BOX).filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0)))
    light = rng.uniform(0.6, 1.15)  # a dim or bright warehouse
    a = np.asarray(out, np.float32) * light + nrng.normal(0, rng.uniform(2, 6), (H, W, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
