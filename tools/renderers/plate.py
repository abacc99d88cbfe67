"""Held-out renderer 4: codes on thermal labels and metal or plastic nameplates, in a held-out
geometric sans (TeX Gyre Adventor), some of them embossed (see README.md here).

The plate sits on a box or a tote on the belt, turned up to 12 degrees. Three ways of marking it:
- thermal: black print on a white or pale label, with the light streaks of a worn print head
  (dead dots leave lines through the print along the feed);
- embossed: the code pressed into a brushed metal or grey plastic plate, with no ink at all: it
  shows only as light and shadow along its edges, lit from one side;
- etched: laser marking on anodised aluminium, dark grey strokes of low contrast.
The frame is RGB, 112x112, with vignetting (the lens darker towards the corners), blur and
noise. `empty`: the belt, a box with no plate, or a plate with no code.
"""

import glob
import hashlib
import math
import os
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 112
SS = 3  # supersampling of the drawing
MODES = ("thermal", "embossed", "etched")
MODE_SHARE = (0.45, 0.3, 0.25)


def _adventor() -> tuple:
    """TeX Gyre Adventor (Debian's fonts-texgyre, which tools/setup-system installs)."""
    found = glob.glob("/usr/share/texmf/fonts/opentype/**/texgyreadventor-*.otf", recursive=True)
    found += glob.glob("/usr/share/fonts/**/texgyreadventor-*.otf", recursive=True)
    by_name = {}
    for path in sorted(found):
        by_name.setdefault(os.path.basename(path), path)
    return tuple(by_name[n] for n in sorted(by_name))


FONT_FILES = _adventor()


def _rng(seed: int, label: str, index: int) -> random.Random:
    key = hashlib.blake2b(("plate|%d|%s|%d" % (seed, label, index)).encode(), digest_size=8)
    return random.Random(int.from_bytes(key.digest(), "big"))


def _code_mask(rng: random.Random, code: str, h: int) -> Image.Image:
    """`code` in Adventor as an L mask, cropped to its ink, `h` pixels high."""
    if not FONT_FILES:
        raise RuntimeError("plate renderer: TeX Gyre Adventor not found (tools/setup-system)")
    font = ImageFont.truetype(rng.choice(FONT_FILES), int(h * 1.4))
    left, top, right, bottom = font.getbbox(code)
    img = Image.new("L", (right - left + 8, bottom - top + 8), 0)
    ImageDraw.Draw(img).text((4 - left, 4 - top), code, font=font, fill=255)
    img = img.crop(img.getbbox())
    track = rng.uniform(0.9, 1.1)  # a little narrower or wider set
    return img.resize((max(1, int(img.width * track * h / img.height)), h), Image.LANCZOS)


def _brushed(nrng: np.random.Generator, w: int, h: int, tone: float) -> np.ndarray:
    """A grey field with fine streaks along x (brushed metal) or speckle (moulded plastic)."""
    streaks = nrng.normal(0, 6, (h, 1)) + nrng.normal(0, 2, (h, w))
    return tone + streaks


def _plate(rng, nrng, code: "str | None", w: int, h: int, mode=None) -> Image.Image:
    """The plate (RGBA), `code` marked on it in `mode` (drawn from MODES when None); a `code`
    of None leaves it blank."""
    mode = mode or rng.choices(MODES, MODE_SHARE)[0]
    if mode == "thermal":
        base = np.full((h, w, 3), rng.uniform(215, 250)) * [1, 1, rng.uniform(0.9, 1.0)]
    elif mode == "embossed":
        base = np.repeat(_brushed(nrng, w, h, rng.uniform(120, 200))[:, :, None], 3, axis=2)
    else:  # anodised aluminium: blue, red, black, silver or gold
        colour = rng.choice(
            [(60, 90, 160), (150, 50, 50), (45, 45, 50), (175, 175, 180), (190, 160, 90)]
        )
        base = np.asarray(colour, np.float64) + nrng.normal(0, 3, (h, w, 1))
    if code is not None:
        ch = int(h * rng.uniform(0.4, 0.6))
        mask = _code_mask(rng, code, ch)
        if mask.width > 0.85 * w:
            mask = mask.resize((int(0.85 * w), max(1, int(mask.height * 0.85 * w / mask.width))))
        x = (w - mask.width) // 2 + rng.randint(-w // 20, w // 20)
        y = (h - mask.height) // 2 + rng.randint(-h // 12, h // 12)
        m = np.zeros((h, w))
        m[y : y + mask.height, x : x + mask.width] = np.asarray(mask, np.float64) / 255
        if mode == "thermal":
            dead = np.ones(w)
            for _ in range(rng.randint(0, 4)):  # a worn print head: dead dots along the feed
                at = rng.randrange(w)
                dead[at : at + rng.randint(1, SS)] = rng.uniform(0.0, 0.4)
            ink = rng.uniform(10, 50)
            m = m * dead[None, :] * rng.uniform(0.8, 1.0)
            base = base * (1 - m[:, :, None]) + ink * m[:, :, None]
        elif mode == "embossed":
            height = np.asarray(
                Image.fromarray((m * 255).astype(np.uint8)).filter(
                    ImageFilter.GaussianBlur(ch * rng.uniform(0.02, 0.05))
                ),
                np.float64,
            )
            gy, gx = np.gradient(height)
            theta = rng.uniform(0, 2 * math.pi)  # the light's direction across the plate
            slope = gx * math.cos(theta) + gy * math.sin(theta)
            shade = slope / (np.abs(slope).max() + 1e-9) * rng.uniform(60, 100)
            raised = rng.choice((1, -1))  # pressed out of the plate, or into it
            base = base + raised * shade[:, :, None] - rng.uniform(0, 15) * m[:, :, None]
        else:
            depth = rng.uniform(0.35, 0.6)
            base = base * (1 - depth * m[:, :, None]) + 20 * depth * m[:, :, None]
    alpha = np.full((h, w, 1), 255.0)
    rgba = np.concatenate([np.clip(base, 0, 255), alpha], axis=2).astype(np.uint8)
    plate = Image.fromarray(rgba, "RGBA")
    ImageDraw.Draw(plate).rectangle([0, 0, w - 1, h - 1], outline=(40, 40, 40, 255), width=SS)
    for cx, cy in ((w // 14, h // 2), (w - w // 14, h // 2)) if mode != "thermal" else ():
        r = max(SS, h // 14)  # rivets at the ends of a nameplate
        ImageDraw.Draw(plate).ellipse([cx - r, cy - r, cx + r, cy + r], fill=(90, 90, 95, 255))
    return plate


def render(label: str, index: int, seed: int = 0) -> Image.Image:
    rng = _rng(seed, label, index)
    nrng = np.random.default_rng(rng.getrandbits(32))
    n = SIZE * SS
    grey = rng.uniform(40, 170)
    img = Image.new("RGB", (n, n), (int(grey),) * 3)
    grain = np.asarray(img, np.float64) + nrng.normal(0, 4, (n, n, 1))
    img = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8))
    scene = "plate" if label != "empty" else rng.choice(("belt", "box", "plate"))
    if scene != "belt":
        bw, bh = int(n * rng.uniform(0.7, 1.1)), int(n * rng.uniform(0.6, 1.0))
        tone = rng.choice([(190, 150, 100), (200, 200, 195), (60, 90, 140), (150, 40, 40)])
        box = Image.new("RGBA", (bw, bh), tone + (255,))
        if scene == "plate":
            ph = int(n * rng.uniform(0.3, 0.5))
            pw = int(min(bw * 0.95, ph * rng.uniform(2.0, 2.8)))
            plate = _plate(rng, nrng, label if label != "empty" else None, pw, ph)
            box.paste(plate, ((bw - pw) // 2, (bh - ph) // 2), plate)
        box = box.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC, expand=True)
        x = (n - box.width) // 2 + rng.randint(-n // 14, n // 14)
        y = (n - box.height) // 2 + rng.randint(-n // 14, n // 14)
        img.paste(box, (x, y), box)
    a = np.asarray(img.resize((SIZE, SIZE), Image.BOX), np.float64)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] / SIZE - 0.5
    vignette = 1 - rng.uniform(0.2, 0.5) * (xs**2 + ys**2) * 2
    a = a * vignette[:, :, None] * rng.uniform(0.8, 1.15)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8))
    )
    a = np.asarray(out, np.float64) + nrng.normal(0, rng.uniform(1.5, 5), (SIZE, SIZE, 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
