"""Held-out renderer 6: codes on polythene mailer bags (see README.md here).

A bag is not a box: its film is wrinkled, so the code printed on it, or on the shipping label
stuck to it, is bent with the film: a smooth random field of displacements plus a few sharp
creases, each shearing the print across its line, moves every pixel of the bag (a non-rigid
warp, sampled in numpy). The same wrinkles light the film: the side of a ridge facing the
lamp is lighter, the other darker, and where the film faces it squarely a specular streak of
glare washes over whatever is printed there. Film in white, grey, black or a colour; the code in
ink on the film (a colour that stands out from it) or in black on a white label with an address
block and a tracking barcode. `empty`: the belt, a bag with nothing on it, or a bag with a
shipping label that carries no code (address lines and a barcode). RGB frames, 128x96 (4:3),
with motion blur along the belt, defocus and noise.
"""

import glob
import hashlib
import math
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

W, H = 128, 96
SS = 3  # supersampling of the drawing
_FACES = (
    "OpenSans-Semibold.ttf",
    "OpenSans-CondBold.ttf",
    "Arimo-Regular.ttf",
    "Cousine-Bold.ttf",
    "LiberationSans-Regular.ttf",
)
FILMS = ((235, 235, 232), (200, 200, 205), (40, 40, 45), (70, 110, 170), (230, 150, 170))


def _faces() -> tuple:
    found = {}
    for path in sorted(glob.glob("/usr/share/fonts/truetype/**/*.ttf", recursive=True)):
        found.setdefault(os.path.basename(path), path)
    return tuple(found[n] for n in _FACES if n in found)


FONT_FILES = _faces()


def _rng(seed: int, label: str, index: int) -> random.Random:
    key = hashlib.blake2b(("bag|%d|%s|%d" % (seed, label, index)).encode(), digest_size=8)
    return random.Random(int.from_bytes(key.digest(), "big"))


def _luma(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _text(rng: random.Random, text: str, h: int) -> Image.Image:
    """`text` as an L mask cropped to its ink, `h` pixels high."""
    if not FONT_FILES:
        raise RuntimeError("bag renderer: its fonts are missing (tools/setup-system)")
    font = ImageFont.truetype(rng.choice(FONT_FILES), max(6, int(h * 1.4)))
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(img).text((4 - left, 4 - top), text, font=font, fill=255)
    img = img.crop(img.getbbox())
    return img.resize((max(1, int(img.width * h / img.height)), h), Image.LANCZOS)


def _smooth_field(nrng: np.random.Generator, w: int, h: int, cells: int) -> np.ndarray:
    """Smooth noise in [-1, 1] with about `cells` bumps across the wider side."""
    gw = max(2, cells)
    gh = max(2, int(round(cells * h / w)))
    small = (nrng.random((gh, gw)) * 255).astype(np.uint8)
    big = Image.fromarray(small).resize((w, h), Image.BICUBIC)
    return np.asarray(big, np.float64) / 127.5 - 1


def wrinkles(rng, nrng, w: int, h: int, scale: float) -> tuple:
    """The film's (height, dx, dy) over w x h: a smooth random surface plus a few creases.
    `scale`: the code's height in pixels; displacements stay within about a fifth of it."""
    height = _smooth_field(nrng, w, h, rng.randint(3, 6)) * scale * 0.5
    dx = _smooth_field(nrng, w, h, rng.randint(2, 5)) * scale * rng.uniform(0.03, 0.1)
    dy = _smooth_field(nrng, w, h, rng.randint(2, 5)) * scale * rng.uniform(0.03, 0.1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for _ in range(rng.randint(1, 4)):  # a crease: a line the film is folded along
        theta = rng.uniform(0, math.pi)
        nx, ny = math.cos(theta), math.sin(theta)  # the crease's normal
        c = rng.uniform(0.2, 0.8) * w * nx + rng.uniform(0.2, 0.8) * h * ny
        d = (xx * nx + yy * ny - c) / (scale * rng.uniform(0.08, 0.2))
        step = np.tanh(d)  # the film on either side shifted apart along the crease
        shear = scale * rng.uniform(0.04, 0.12) * rng.choice((-1, 1))
        dx += shear * step * -ny
        dy += shear * step * nx
        height += scale * rng.uniform(0.2, 0.5) / np.cosh(d)  # a ridge along it
    return height, dx, dy


def warp(img: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """`img` (H x W x C, float) sampled at (x + dx, y + dy), bilinearly, edges clamped."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    x = np.clip(xx + dx, 0, w - 1)
    y = np.clip(yy + dy, 0, h - 1)
    x0, y0 = np.minimum(x.astype(int), w - 2), np.minimum(y.astype(int), h - 2)
    fx, fy = (x - x0)[:, :, None], (y - y0)[:, :, None]
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _barcode(rng, draw, box) -> None:
    """Bars of one to three units across `box`, drawn as print (255) on the ink mask."""
    x0, y0, x1, y1 = box
    unit = max(1, (y1 - y0) // rng.randint(6, 12))
    x = x0
    while x < x1:
        bw = rng.choice((1, 1, 2, 3)) * unit
        if rng.random() < 0.5:
            draw.rectangle([x, y0, min(x + bw - 1, x1), y1], fill=255)
        x += bw


def _address(rng) -> list:
    names = ("J MEIER", "A ROSSI", "K NOWAK", "L DUBOIS", "P SILVA", "M JANSEN")
    streets = ("HAUPTSTR", "VIA ROMA", "UL DLUGA", "RUE HAUTE", "KERKSTRAAT")
    return [
        rng.choice(names),
        "%d %s" % (rng.randint(1, 220), rng.choice(streets)),
        "%05d %s" % (rng.randint(10000, 99999), rng.choice(("BERLIN", "MILANO", "GDANSK", "LYON"))),
    ]


def _label(rng, layer: Image.Image, ink: Image.Image, cx, cy, code, ch) -> None:
    """A white shipping label centred at (cx, cy): the code in black (when `code`), an address
    block and a tracking barcode."""
    lw, lh = int(ch * rng.uniform(3.6, 4.6)), int(ch * rng.uniform(3.0, 3.6))
    x0, y0 = cx - lw // 2, cy - lh // 2
    draw = ImageDraw.Draw(layer)
    draw.rectangle([x0, y0, x0 + lw, y0 + lh], fill=tuple(rng.randint(238, 252) for _ in range(3)))
    small = max(4, ch // 5)
    lines = _address(rng)
    at_top = rng.random() < 0.5  # the address above the code, or below it
    ay = y0 + ch // 5 if at_top else y0 + lh - ch // 5 - 3 * (small + small // 3)
    for i, line in enumerate(lines):
        mask = _text(rng, line, small)
        ink.paste(255, (x0 + ch // 4, ay + i * (small + small // 3)), mask)
    code_y = y0 + lh // 2 - ch // 2 + (ch // 3 if at_top else -ch // 3)
    if code:
        mask = _text(rng, code, ch)
        ink.paste(255, (cx - mask.width // 2, code_y), mask)
        bar_y = code_y + ch + ch // 6 if at_top else y0 + lh - ch // 2
    else:  # a label without a code: its barcode where the code would be
        bar_y = code_y + ch // 4
    if bar_y + ch // 3 < y0 + lh:
        _barcode(
            rng, ImageDraw.Draw(ink), (x0 + ch // 4, bar_y, x0 + lw - ch // 4, bar_y + ch // 3)
        )


def render(label: str, index: int, seed: int = 0) -> Image.Image:
    rng = _rng(seed, label, index)
    nrng = np.random.default_rng(rng.getrandbits(32))
    w, h = W * SS, H * SS
    belt_tone = rng.choice((rng.uniform(30, 70), rng.uniform(140, 200)))
    belt = belt_tone + nrng.normal(0, 4, (h, w, 1)) + np.zeros((1, 1, 3))
    code = label != "empty"
    kind = "bag" if code else rng.choice(("belt", "bag", "bag", "label"))
    if kind == "belt":
        frame = belt
    else:
        film = rng.choice(FILMS)
        layer = Image.new("RGB", (w, h), film)
        ink = Image.new("L", (w, h), 0)  # where print is, in whatever colour it takes
        ch = int(h * rng.uniform(0.16, 0.28))  # the code's height
        cx = w // 2 + rng.randint(-w // 12, w // 12)
        cy = h // 2 + rng.randint(-h // 12, h // 12)
        colour = (15, 15, 15)
        on_label = kind == "label" or (code and rng.random() < 0.5)
        if on_label:
            _label(rng, layer, ink, cx, cy, label if code else None, ch)
        elif code:  # printed on the film in an ink that stands out from it
            inks = ((15, 15, 15), (245, 245, 245), (200, 30, 40), (20, 50, 140))
            colour = rng.choice([c for c in inks if abs(_luma(c) - _luma(film)) >= 70])
            mask = _text(rng, label, ch)
            ink.paste(255, (cx - mask.width // 2, cy - ch // 2), mask)
        a = np.asarray(layer, np.float64)
        cover = np.asarray(ink, np.float64)[:, :, None] / 255
        a = a * (1 - cover) + np.asarray(colour, np.float64) * cover
        # the bag's outline: larger than the frame or a little inside it
        bw, bh = int(w * rng.uniform(0.75, 1.3)), int(h * rng.uniform(0.8, 1.4))
        shape = Image.new("L", (w, h), 0)
        ImageDraw.Draw(shape).rounded_rectangle(
            [cx - bw // 2, cy - bh // 2, cx + bw // 2, cy + bh // 2], radius=ch, fill=255
        )
        height, dx, dy = wrinkles(rng, nrng, w, h, ch)
        stack = np.concatenate([a, np.asarray(shape, np.float64)[:, :, None]], axis=2)
        stack = warp(stack, dx, dy)
        a, alpha = stack[:, :, :3], stack[:, :, 3:] / 255
        # light from one side: diffuse shading and specular glare where the film faces it
        gy, gx = np.gradient(height)
        theta = rng.uniform(0, 2 * math.pi)
        slope = (gx * math.cos(theta) + gy * math.sin(theta)) / (np.hypot(gx, gy).max() + 1e-9)
        a = a * (1 + rng.uniform(0.1, 0.3) * slope[:, :, None])
        facing = rng.uniform(0.4, 0.8)
        glare = np.exp(-(((slope - facing) / rng.uniform(0.06, 0.15)) ** 2))
        a = a + rng.uniform(0.3, 0.8) * glare[:, :, None] * (255 - a)
        frame = belt * (1 - alpha) + a * alpha
    img = Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8), "RGB")
    img = img.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, fillcolor=(50, 50, 50))
    img = img.resize((W, H), Image.BOX)
    streak = rng.randint(1, 3)  # motion along the belt, in output pixels
    if streak > 1:  # a 3x3 kernel whose middle row averages `streak` pixels
        row = [0.0] * 3 + [1.0] * streak + [0.0] * (6 - streak)
        img = img.filter(ImageFilter.Kernel((3, 3), row, scale=streak))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))
    light = rng.uniform(0.7, 1.1)
    a = np.asarray(img, np.float64) * light + nrng.normal(0, rng.uniform(2, 5), (H, W, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
