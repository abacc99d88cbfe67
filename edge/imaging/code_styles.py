"""How a code is put on a box: the named styles the synthetic generator mixes and holds out.

Each style paints one code onto a box face (an RGB Pillow image) inside a given box in face
pixels and returns nothing; `STYLES` maps the names `binsort data synth --styles` takes to them:

- `carton`: printed straight on the carton (flexo ink, dark or coloured), any font, sometimes
  with a barcode in the same ink under it;
- `label`: a paper sticker (white or coloured, with or without a printed border) carrying the
  code, often with a barcode strip and lines of small print beside it;
- `stamp`: a hand ink stamp: patchy, faded ink in blue, red, violet or black, often framed;
- `dotmatrix`: industrial inkjet: characters made of dots on a 5x7 grid, drawn here;
- `stencil`: sprayed through a stencil: bold glyphs broken by bridges, soft edges, overspray.

Glyphs come from every TrueType/OpenType font in the system's font folders and matplotlib's
(regular to bold by stroke width, normal to condensed by squeezing; fonts lacking a character,
symbol faces, reverse-video faces and the faces held out for evaluation are skipped), or are
drawn here (the dot grid). tools/setup-system installs a dozen font packages (sans, serif,
mono, OCR-A/B). numpy and Pillow only; every choice comes from the `rng` given.
"""

import glob
import math
import os
import random
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/usr/share/texmf/fonts/opentype",  # Debian's TeX Gyre faces live here
    os.path.expanduser("~/.fonts"),
)
# Faces never drawn here: symbol and math faces whose letters are not letters (DSEGWeather's
# are icons; a 7-segment display has no K or V, and DSEG7 draws them as other letters), DSEG14's
# Mini cuts (the same segments again: DSEG14 Classic and Modern, 12 of some 190 faces, are the
# 14-segment print of label printers and case coders, binsort-synth-9), and the faces
# tools/renderers/sticker.py and plate.py draw their codes in, so that they measure reading a
# typeface the generator never showed (see tools/renderers/README.md).
SKIP_FONTS = (
    "cmex10",
    "cmsy10",
    "cmmi10",
    "LastResort",
    "STIXSiz",
    "STIXNonUni",
    "DSEG7",
    "DSEGWeather",
    "DSEG14ClassicMini",
    "DSEG14ModernMini",
)
HELD_OUT_FONTS = (
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "texgyreadventor-regular.otf",
    "texgyreadventor-bold.otf",
    "texgyreadventor-italic.otf",
    "texgyreadventor-bolditalic.otf",
)

# 5x7 dot-matrix glyphs (industrial inkjet and dot printers), rows top to bottom
DOT_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}


def _bundled_font_dir() -> "str | None":
    """matplotlib's own fonts (DejaVu, STIX, Computer Modern), found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "mpl-data", "fonts", "ttf")


@lru_cache(maxsize=1)
def system_fonts() -> tuple:
    """Every TrueType/OpenType file in the system font folders and matplotlib's, less the
    skipped and held-out faces, in a stable order."""
    found = set()
    for folder in FONT_DIRS + (_bundled_font_dir() or "",):
        if not folder:
            continue
        for ext in ("ttf", "otf", "TTF", "OTF"):
            found.update(glob.glob(os.path.join(folder, "**", "*." + ext), recursive=True))
    keep = []
    for path in found:
        name = os.path.basename(path)
        if name in HELD_OUT_FONTS or name.startswith(SKIP_FONTS) or reverse_video(path):
            continue
        keep.append(path)
    return tuple(sorted(keep, key=lambda p: (os.path.basename(p), p)))


# A reverse-video face (OCR-B's OCRBE and OCRBX: each character knocked out of a solid cell)
# covers about 80% of its glyphs' boxes; the heaviest ordinary face here, 62%.
REVERSE_COVERAGE = 0.75


@cache
def reverse_video(path) -> bool:
    """Whether the face draws its characters as holes in a solid cell. Laid on a box as ink it
    prints a dark block, and a bold stroke closes the holes: the code is gone (binsort-synth-4
    drew such codes, and a model read 48% of them; training notes, section 5, twelfth round).
    The generator prints light on dark by inverting the box instead (box_images)."""
    try:
        font = _font(path, 40)
    except OSError:
        return False
    cover = []
    for ch in "EHKNSVX0":
        a = np.frombuffer(_glyph(font, ch), np.uint8).reshape(64, 64)
        ys, xs = np.nonzero(a)
        if len(ys):
            cover.append(a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].mean() / 255)
    return bool(cover) and float(np.mean(cover)) > REVERSE_COVERAGE


@lru_cache(maxsize=8)  # each face holds its font file in memory (~0.5 MB)
def _font(path, size: int):
    if path is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(path, size)


def _glyph(font, ch: str) -> bytes:
    img = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(img).text((8, 4), ch, font=font, fill=255)
    return img.tobytes()


@cache  # fonts x characters drawn: about 10,000 booleans
def _has_glyph(path, ch: str) -> bool:
    """Whether the font draws `ch` as itself (not blank, not its missing-glyph box)."""
    if path is None or ch == " ":
        return True
    try:
        font = _font(path, 40)
        drawn = _glyph(font, ch)
        return any(drawn) and drawn != _glyph(font, "\ufffe")
    except OSError:
        return False


def fonts_for(text: str) -> tuple:
    """The fonts that can draw `text`, with Pillow's own font as the last resort."""
    fonts = system_fonts()
    can = (1 << len(fonts)) - 1
    for ch in set(text):
        can &= _fonts_with(ch)
    return tuple(p for i, p in enumerate(fonts) if can >> i & 1) + (None,)


@cache
def _fonts_with(ch: str) -> int:
    """The fonts of system_fonts() that draw `ch`, as bits (font i is bit i): the small print
    draws a new text for nearly every frame, and testing each font for each of its characters
    again took a sixth of a frame's time."""
    return sum(1 << i for i, p in enumerate(system_fonts()) if _has_glyph(p, ch))


def text_mask(rng: random.Random, text: str, height: int) -> Image.Image:
    """`text` in a random font, weight and width as an L coverage mask, cropped, ~height tall."""
    path = rng.choice(fonts_for(text))
    px = max(8, int(height * 1.35))
    font = _font(path, px)
    bold = rng.choice((0, 0, 1, 2)) * max(1, px // 28)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=bold)
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text(
        (2 - left, 2 - top), text, font=font, fill=255, stroke_width=bold, stroke_fill=255
    )
    img = img.crop(img.getbbox() or (0, 0, 1, 1))
    squeeze = rng.uniform(0.7, 1.15)  # condensed to slightly extended
    return img.resize(
        (max(1, int(img.width * squeeze * height / img.height)), max(1, height)), Image.LANCZOS
    )


def dot_mask(rng: random.Random, text: str, height: int) -> Image.Image:
    """`text` in 5x7 dots (inkjet): round dots on a grid, a little jittered, some faint."""
    pitch = height / 7.0
    radius = pitch * rng.uniform(0.32, 0.55)
    advance = 6 if rng.random() < 0.7 else 6.5
    w = int(pitch * advance * len(text) + 2 * radius + 2)
    img = Image.new("L", (w, int(height + 2 * radius + 2)), 0)
    draw = ImageDraw.Draw(img)
    jitter = pitch * 0.08
    for i, ch in enumerate(text):
        rows = DOT_GLYPHS.get(ch.upper(), DOT_GLYPHS["-"]).split()
        for r, row in enumerate(rows):
            for c, bit in enumerate(row):
                if bit != "1":
                    continue
                x = radius + 1 + (i * advance + c) * pitch + rng.gauss(0, jitter)
                y = radius + 1 + r * pitch + rng.gauss(0, jitter)
                level = 255 if rng.random() > 0.08 else rng.randint(90, 200)
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=level)
    return img


def stencil_mask(rng: random.Random, text: str, height: int) -> Image.Image:
    """Bold glyphs cut by stencil bridges: gaps through the top and bottom of each character
    and through its left half at mid height, as a stencil needs to hold its islands."""
    font_rng = random.Random(rng.random())  # one font for the whole code
    state = font_rng.getstate()
    parts = []
    for ch in text:
        font_rng.setstate(state)
        parts.append(text_mask(font_rng, ch, height) if ch != " " else None)
    gap = max(1, int(height * rng.uniform(0.12, 0.25)))
    widths = [p.width if p else height // 2 for p in parts]
    mask = Image.new("L", (sum(widths) + gap * (len(parts) - 1), height), 0)
    draw = ImageDraw.Draw(mask)
    x = 0
    bridge = max(1, int(height * rng.uniform(0.06, 0.1)))
    for part, w in zip(parts, widths, strict=True):
        if part is not None:
            mask.paste(part, (x, 0))
            cx = x + w // 2
            draw.rectangle([cx - bridge // 2, 0, cx + bridge // 2, height // 4], fill=0)
            draw.rectangle([cx - bridge // 2, height - height // 4, cx + bridge // 2, height], 0)
            my = height // 2
            draw.rectangle([x, my - bridge // 2, x + int(w * 0.35), my + bridge // 2], fill=0)
        x += w + gap
    return mask


def _ink(face: Image.Image, mask: Image.Image, at: tuple, colour: tuple, opacity: float) -> None:
    """Lay `colour` on the face through `mask` (L coverage) at `at` (top-left)."""
    alpha = mask.point(lambda v, o=opacity: int(v * o))
    face.paste(Image.new("RGB", mask.size, colour), at, alpha)


def _patchy(mask: Image.Image, nrng: np.random.Generator, keep: float, grain: float) -> Image.Image:
    """Mask coverage times a blotchy noise field: worn, smudged or unevenly inked print."""
    w, h = mask.size
    small = nrng.random((max(2, int(h / grain)), max(2, int(w / grain))))
    field = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    f = np.asarray(field, np.float32) / 255
    cover = np.clip((f - (1 - keep)) * 4 + 0.6, 0.15, 1)
    return Image.fromarray((np.asarray(mask, np.float32) * cover).astype(np.uint8))


def dark_ink(rng: random.Random) -> tuple:
    k = rng.randint(5, 70)
    return (k, k, k + rng.randint(0, 25))


def _code_ink(rng: random.Random) -> tuple:
    """Print ink: mostly black, sometimes a dark colour."""
    if rng.random() < 0.75:
        return dark_ink(rng)
    return rng.choice([(20, 40, 110), (110, 20, 25), (20, 80, 40), (60, 30, 90)])


# Barcodes beside a code (binsort-synth-11): of the label stickers the sticker renderer draws,
# 60% carry a barcode under the code, and 23 of the default model's 24 errors on them were such
# stickers; drawn without their barcodes the same renderer's frames read 0.999, not 0.976
# (docs/training-notes.md section 5, twentieth round). synth-10 put one under a code on 30% of
# its labels (6% of the coded frames) and never on a carton.
LABEL_BELOW = 0.65  # a label with a strip under its code (synth-10: 0.5)
LABEL_BARCODE = 0.75  # ... that strip a barcode, not small print (synth-10: 0.6)
CARTON_BARCODE = 0.25  # a code printed on the carton with a barcode in the same ink under it


def carton(rng, nrng, face, code, box):
    """Printed straight on the carton: flexo ink, dark or coloured, sometimes faded, sometimes
    with a barcode under it (the same print: the same ink, fading and blur)."""
    x0, y0, x1, y1 = box
    mask = text_mask(rng, code, y1 - y0)
    mask = _fit(mask, x1 - x0)
    at = _centred(mask, box)
    if rng.random() < CARTON_BARCODE:  # in the room the code keeps clear below it
        mh = mask.height
        gap, tall = int(mh * rng.uniform(0.15, 0.35)), max(2, int(mh * rng.uniform(0.35, 0.6)))
        both = Image.new("L", (mask.width, mh + gap + tall), 0)
        both.paste(mask, (0, 0))
        _barcode(ImageDraw.Draw(both), rng, (0, mh + gap, mask.width - 1, mh + gap + tall), 255)
        mask = both
    if rng.random() < 0.4:  # faded or smudged flexo print
        mask = _patchy(mask, nrng, rng.uniform(0.6, 0.95), rng.uniform(2, 6))
    if rng.random() < 0.3:
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    _ink(face, mask, at, _code_ink(rng), rng.uniform(0.75, 1.0))


def label(rng, nrng, face, code, box):
    """A paper sticker, white or coloured, maybe bordered, with a barcode or small print."""
    x0, y0, x1, y1 = box
    mask = _fit(text_mask(rng, code, y1 - y0), x1 - x0)
    mw, mh = mask.size
    pad = int(mh * rng.uniform(0.2, 0.45))
    below = int(mh * rng.uniform(0.45, 0.7)) if rng.random() < LABEL_BELOW else 0  # bars, print
    above = int(mh * rng.uniform(0.25, 0.45)) if rng.random() < 0.4 else 0  # a line of print
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    lx0, ly0 = cx - mw // 2 - pad, cy - mh // 2 - pad - above
    lx1, ly1 = cx + mw // 2 + pad, cy + mh // 2 + pad + below
    draw = ImageDraw.Draw(face)
    paper = (
        tuple(rng.randint(228, 252) for _ in range(3))
        if rng.random() < 0.7
        else rng.choice([(240, 225, 120), (170, 210, 235), (240, 180, 170), (190, 230, 180)])
    )
    draw.rounded_rectangle([lx0, ly0, lx1, ly1], radius=rng.randint(0, pad), fill=paper)
    if rng.random() < 0.5:  # a printed border
        m = max(1, pad // rng.randint(2, 4))
        width = max(1, int(mh * rng.uniform(0.03, 0.08)))
        draw.rectangle([lx0 + m, ly0 + m, lx1 - m, ly1 - m], outline=dark_ink(rng), width=width)
    if below:
        if rng.random() < LABEL_BARCODE:
            _barcode(draw, rng, (lx0 + pad, cy + mh // 2 + pad // 2, lx1 - pad, ly1 - pad // 2))
        else:
            _small_print(rng, face, (lx0 + pad, cy + mh // 2 + pad // 2, lx1 - pad, ly1 - pad // 2))
    if above:
        _small_print(rng, face, (lx0 + pad, ly0 + pad // 2, lx1 - pad, ly0 + pad // 2 + above))
    _ink(face, mask, (cx - mw // 2, cy - mh // 2), dark_ink(rng), 1.0)


def stamp(rng, nrng, face, code, box):
    """A hand ink stamp: patchy blue, red, violet or black ink, often in a frame."""
    x0, y0, x1, y1 = box
    mask = _fit(text_mask(rng, code, y1 - y0), x1 - x0)
    if rng.random() < 0.6:  # the stamp's frame
        pad = int(mask.height * rng.uniform(0.15, 0.35))
        framed = Image.new("L", (mask.width + 2 * pad, mask.height + 2 * pad), 0)
        framed.paste(mask, (pad, pad))
        ImageDraw.Draw(framed).rectangle(
            [0, 0, framed.width - 1, framed.height - 1],
            outline=255,
            width=max(1, int(mask.height * rng.uniform(0.05, 0.1))),
        )
        mask = framed
    mask = mask.rotate(rng.uniform(-6, 6), resample=Image.BICUBIC, expand=True)
    mask = _patchy(mask, nrng, rng.uniform(0.45, 0.85), rng.uniform(1.5, 4))
    colour = rng.choice([(30, 50, 150), (150, 30, 40), (90, 40, 120), (25, 25, 30)])
    _ink(face, mask, _centred(mask, box), colour, rng.uniform(0.6, 0.95))


def dotmatrix(rng, nrng, face, code, box):
    """Industrial inkjet: characters of round dots on a 5x7 grid."""
    x0, y0, x1, y1 = box
    mask = _fit(dot_mask(rng, code, y1 - y0), x1 - x0)
    if rng.random() < 0.4:  # ink spreading into the carton
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    _ink(face, mask, _centred(mask, box), dark_ink(rng), rng.uniform(0.8, 1.0))


def stencil(rng, nrng, face, code, box):
    """Sprayed through a stencil: bold glyphs cut by bridges, soft edges, overspray."""
    x0, y0, x1, y1 = box
    mask = _fit(stencil_mask(rng, code, y1 - y0), x1 - x0)
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))  # sprayed edges
    if rng.random() < 0.5:  # overspray speckle
        spray = (nrng.random((mask.height, mask.width)) < rng.uniform(0.01, 0.04)) * 160
        blurred = np.asarray(mask.filter(ImageFilter.MaxFilter(5)), np.float32)
        speck = spray * (blurred > 0)
        mask = Image.fromarray(np.maximum(np.asarray(mask), speck).astype(np.uint8))
    _ink(face, mask, _centred(mask, box), dark_ink(rng), rng.uniform(0.75, 1.0))


STYLES = {
    "carton": carton,
    "label": label,
    "stamp": stamp,
    "dotmatrix": dotmatrix,
    "stencil": stencil,
}


def _fit(mask: Image.Image, width: int) -> Image.Image:
    """Shrink a mask (keeping its aspect) until it is at most `width` wide."""
    if mask.width <= width:
        return mask
    h = max(1, int(mask.height * width / mask.width))
    return mask.resize((width, h), Image.LANCZOS)


def _centred(mask: Image.Image, box: tuple) -> tuple:
    x0, y0, x1, y1 = box
    return ((x0 + x1 - mask.width) // 2, (y0 + y1 - mask.height) // 2)


def _barcode(draw, rng, box, fill=None) -> None:
    """Bars of one to three units across `box`; each in a dark ink of its own, or `fill`. The
    unit (the narrowest bar) is a fourth to a fourteenth of the bars' height, log-uniformly: a
    barcode printed coarse or fine for the size of the code beside it (with a twelfth only, as
    synth-10 drew, the sticker renderer's bars cost a model 0.8 points more than the same bars
    drawn thin; training notes, section 5, twentieth round)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    unit = max(1, int(round((y1 - y0) / math.exp(rng.uniform(math.log(4), math.log(14))))))
    x = x0
    while x < x1 and y1 > y0:
        w = rng.choice((1, 1, 2, 3)) * unit
        if rng.random() < 0.55:
            colour = dark_ink(rng) if fill is None else fill
            draw.rectangle([x, y0, min(x + w - 1, x1), y1], fill=colour)
        x += w


SMALL_PRINT = ("LOT", "BATCH", "EXP", "MFG", "NET WT", "QTY", "REF", "SN", "KG", "PCS")


def small_print_text(rng: random.Random) -> str:
    """A lot number, date or quantity: other print on a box that is not its code."""
    kind = rng.randrange(4)
    if kind == 0:
        return "%s %d" % (rng.choice(SMALL_PRINT), rng.randint(100, 99999))
    if kind == 1:
        return "%04d-%02d-%02d" % (rng.randint(2020, 2030), rng.randint(1, 12), rng.randint(1, 28))
    if kind == 2:
        return "%d x %d" % (rng.randint(2, 48), rng.randint(10, 500))
    return rng.choice(SMALL_PRINT) + " " + "".join(rng.choice("0123456789") for _ in range(6))


def _small_print(rng, face, box) -> None:
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 - x0 < 4 or y1 - y0 < 3:
        return
    mask = _fit(text_mask(rng, small_print_text(rng), max(3, int((y1 - y0) * 0.8))), x1 - x0)
    _ink(face, mask, (x0, y0), dark_ink(rng), rng.uniform(0.6, 1.0))


def distractor(rng: random.Random, height: int) -> Image.Image:
    """Other print on the box as an L mask: small text, a logo or handling symbols."""
    kind = rng.random()
    if kind < 0.6:
        return text_mask(rng, small_print_text(rng), height)
    size = max(4, int(height * rng.uniform(1.2, 2.5)))
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    w = max(1, size // 10)
    if kind < 0.75:  # a round logo
        draw.ellipse([w, w, size - w, size - w], outline=255, width=w)
        draw.ellipse([size // 3, size // 3, size - size // 3, size - size // 3], fill=255)
    elif kind < 0.88:  # "this side up" arrows
        for cx in (size // 3, 2 * size // 3):
            draw.polygon([(cx, w), (cx - size // 7, size // 3), (cx + size // 7, size // 3)], 255)
            draw.rectangle([cx - w, size // 3, cx + w, size - w], fill=255)
    else:  # a triangle warning sign
        draw.polygon([(size // 2, w), (w, size - w), (size - w, size - w)], outline=255, width=w)
    return img


def lay_distractor(rng, face, mask, at) -> None:
    _ink(face, mask, at, dark_ink(rng), rng.uniform(0.5, 1.0))
