"""The generator's named code styles: each one paints the code where it is told, styles can be
listed, chosen and held out, and the held-out renderers stay apart from the generator."""

import ast
import hashlib
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edge.imaging.box_images import DEFAULT_CODES, render
from edge.imaging.code_styles import (
    DOT_GLYPHS,
    HELD_OUT_FONTS,
    STYLES,
    _has_glyph,
    dot_mask,
    fonts_for,
    system_fonts,
)
from host.synth import parse_styles, synthesise
from protocol.errors import BinsortError
from tests.shipkit import HOST, ROOT


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_style_paints_the_code_inside_its_box(style):
    rect = (60, 70, 180, 110)  # 120 x 40 pixels, on a 240 x 180 face
    for i in range(5):
        face = Image.new("RGB", (240, 180), (190, 150, 110))
        rng = random.Random(i)
        STYLES[style](rng, np.random.default_rng(i), face, "K11", rect)
        changed = np.abs(np.asarray(face, np.int32) - (190, 150, 110)).sum(axis=2) > 40
        ys, xs = np.nonzero(changed)
        assert changed[70:110, 60:180].mean() > 0.05, style  # ink where the code goes
        # a label's paper, barcode and print reach a little beyond the code, nothing further
        assert xs.min() >= 60 - 30 and xs.max() <= 180 + 30, (style, xs.min(), xs.max())
        assert ys.min() >= 70 - 38 and ys.max() <= 110 + 48, (style, ys.min(), ys.max())


def test_a_carton_code_may_carry_a_barcode_in_its_clear_room_below(monkeypatch):
    import edge.imaging.code_styles as cs

    rect = (60, 70, 180, 110)  # the code's box; the generator keeps a code's height clear below
    below = {}
    for share in (0.0, 1.0):
        monkeypatch.setattr(cs, "CARTON_BARCODE", share)
        below[share] = []
        for i in range(6):
            face = Image.new("RGB", (240, 180), (190, 150, 110))
            cs.carton(random.Random(i), np.random.default_rng(i), face, "K11", rect)
            changed = np.abs(np.asarray(face, np.int32) - (190, 150, 110)).sum(axis=2) > 40
            assert changed[70:110].mean() > 0.05  # the code is there either way
            ys, xs = np.nonzero(changed[110:])
            assert len(ys) == 0 or ys.max() < 40  # nothing past the clear room
            below[share].append(changed[110:150])
    assert not any(b.any() for b in below[0.0])
    for strip in below[1.0]:
        columns = strip.any(axis=0)[60:180]
        assert columns.mean() > 0.2  # bars across the code's width ...
        assert np.count_nonzero(np.diff(columns.astype(int))) >= 6  # ... with gaps between
        rows = strip.any(axis=1)
        assert rows.sum() >= 8  # and as tall as a bar code, not a line


def test_the_dot_matrix_font_has_every_letter_and_digit_on_a_5x7_grid(monkeypatch):
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        rows = DOT_GLYPHS[ch].split()
        assert len(rows) == 7 and all(len(r) == 5 and set(r) <= {"0", "1"} for r in rows), ch
    dots = []
    draw_ellipse = ImageDraw.ImageDraw.ellipse
    monkeypatch.setattr(
        ImageDraw.ImageDraw,
        "ellipse",
        lambda self, xy, **kw: dots.append(xy) or draw_ellipse(self, xy, **kw),
    )
    mask = dot_mask(random.Random(0), "F06", 70)
    bits = sum(DOT_GLYPHS[ch].count("1") for ch in "F06")
    assert len(dots) == bits == 14 + 19 + 15
    assert mask.height >= 70 and np.asarray(mask).max() == 255


def test_fonts_lacking_a_character_are_not_drawn_with():
    fonts = system_fonts()
    assert not _has_glyph(fonts[0], "\U0010fffd")  # a private-use code point no font maps
    assert fonts_for("F06")[-1] is None and len(fonts_for("F06")) > 1
    assert fonts_for("F\U0010fffd") == (None,)


def test_reverse_video_faces_are_not_drawn_with():
    """OCR-B's reverse faces knock each character out of a solid cell: printed as ink they are
    a dark block, and the code is gone. tools/setup-system installs them (fonts-ocr-b)."""
    from edge.imaging.code_styles import reverse_video

    folder = "/usr/share/fonts/opentype/ocr-b"
    reverse = [os.path.join(folder, n) for n in ("OCRBE.otf", "OCRBX.otf")]
    ordinary = [os.path.join(folder, n) for n in ("OCRB.otf", "OCRBL.otf")]
    assert all(os.path.exists(p) for p in reverse + ordinary), "run tools/setup-system"
    assert all(reverse_video(p) for p in reverse)
    assert not any(reverse_video(p) for p in ordinary)
    fonts = system_fonts()
    assert not set(reverse) & set(fonts) and set(ordinary) <= set(fonts)


def _styled(seed, split, tag, index, styles=tuple(STYLES)):
    """_render_styled's (frame, contrast, noise) for one draw, with the scene render() gives it."""
    from edge.imaging import box_images as bi

    rng, scene = (
        bi.seeded_rng(seed, split, tag, index),
        bi.seeded_rng(seed, split, tag + "/scene", index),
    )
    return bi._render_styled(rng, tag.split("#")[0], 100, styles, bi.CODE_HEIGHT, bi._scene(scene))


def test_a_code_too_faint_for_the_noise_is_drawn_again():
    """The first draw of S19 #294 (seed 5) puts its code under 3 sigmas of sensor noise:
    render() gives the next draw instead, which stands out; a frame that passes at once is the
    first draw, unchanged."""
    from edge.imaging import box_images as bi

    first, contrast, noise = _styled(5, "t", "S19", 294)
    assert contrast < bi.LEGIBLE_SIGMAS * noise
    drawn = np.asarray(render(5, "t", "S19", 294, 100, "all"))
    second, contrast2, noise2 = _styled(5, "t", "S19#1", 294)
    assert contrast2 >= max(bi.LEGIBLE_MIN, bi.LEGIBLE_SIGMAS * noise2)
    assert np.array_equal(drawn, np.asarray(second)) and not np.array_equal(drawn, first)
    ok, c, n = _styled(5, "t", "S19", 27)
    assert c >= max(bi.LEGIBLE_MIN, bi.LEGIBLE_SIGMAS * n)
    assert np.array_equal(np.asarray(render(5, "t", "S19", 27, 100, "all")), np.asarray(ok))
    # the contrast is that of the code: the frame against itself has none
    assert bi.stroke_contrast(np.asarray(ok), np.asarray(ok), 20) == 0


def _scene(**change):
    from edge.imaging.box_images import PLAIN_SCENE

    return {**PLAIN_SCENE, **change}


def _frame(index, scene, label="K11", style="label", height=(0.3, 0.35), part=0):
    """A frame as float (part 1: its code's stroke contrast) drawn with `scene`."""
    from edge.imaging import box_images as bi

    rng = bi.seeded_rng(8, "t", label, index)
    drawn = bi._render_styled(rng, label, 100, (style,), height, scene)[part]
    return np.asarray(drawn, np.float64) if part == 0 else drawn


def test_the_scene_draws_light_print_on_dark_boxes_light_belts_turns_and_defocus():
    """Each of binsort-synth-4's scene changes does what it says on the very frame it changes,
    and a frame whose scene draws none of them is binsort-synth-3's, bit for bit; each is drawn
    as often as its share says (synth-6's ribs too)."""
    from edge.imaging import box_images as bi

    for i in range(4):
        plain = _frame(i, _scene())
        assert np.array_equal(plain, _frame(i, None))
        # the box face inverted: the centre (box and code) runs the other way
        inverted = _frame(i, _scene(invert=True))
        a, b = plain[30:70, 30:70].ravel(), inverted[30:70, 30:70].ravel()
        assert np.corrcoef(a, b)[0, 1] < -0.5
        # a light belt: where the frame changes (the belt showing), it is far brighter
        moved = _frame(i, _scene(belt=(190.0, [1.0, 1.0, 1.0]))) - plain
        assert (np.abs(moved) > 10).mean() > 0.05 and moved[np.abs(moved) > 10].mean() > 40
        # defocus: a small code's strokes stand out less (their contrast on the codeless frame)
        small = (0.12, 0.14)
        soft = _frame(i, _scene(defocus=1.5), height=small, part=1)
        assert soft < 0.95 * _frame(i, _scene(), height=small, part=1)
        # a wider turn moves the frame
        assert not np.array_equal(_frame(i, _scene(turn=24.0)), plain)
    scenes = [bi._scene(random.Random(i)) for i in range(2000)]
    share = {
        k: np.mean([bool(s[k]) for s in scenes])
        for k in ("invert", "belt", "turn", "defocus", "ribs")
    }
    assert (
        abs(share["invert"] - bi.LIGHT_ON_DARK) < 0.03 and abs(share["belt"] - bi.LIGHT_BELT) < 0.03
    )
    assert (
        abs(share["turn"] - bi.WIDE_TURN) < 0.03 and abs(share["defocus"] - bi.EXTRA_DEFOCUS) < 0.03
    )
    assert abs(share["ribs"] - bi.RIBBED) < 0.03
    assert all(15 <= abs(s["turn"]) <= 25 for s in scenes if s["turn"] is not None)


def test_ribbed_faces_are_banded_at_their_period():
    """binsort-synth-6's ribs: a face in bands every `period` of the frame, lighter or darker
    by `step`, across or along it; a face without ribs stays as it was."""
    from edge.imaging import box_images as bi

    face = Image.new("RGB", (120, 90), (120, 110, 90))
    ribs = {"across": True, "period": 0.05, "duty": 0.25, "step": 20.0, "soft": 0.0}
    banded = np.asarray(bi._ribbed(face, ribs, 200), np.float64)[:, :, 0] - 120
    rows = banded[:, 0]  # period 10 pixels, the first 2.5 of each lighter by 20
    assert np.array_equal(rows[:10], [20, 20, 20, 0, 0, 0, 0, 0, 0, 0])
    assert np.array_equal(rows[10:90], np.tile(rows[:10], 8)) and (banded == rows[:, None]).all()
    along = np.asarray(bi._ribbed(face, {**ribs, "across": False, "step": -20.0}, 200))
    assert (along[:, :, 0].astype(int) - 120)[0, :10].tolist() == [-20] * 3 + [0] * 7
    assert bi._ribbed(face, None, 200) is face
    for i in range(2):
        plain = _frame(i, _scene(), style="carton")
        ribbed = _frame(i, _scene(ribs={**ribs, "step": 30.0}), style="carton")
        moved = np.abs(ribbed - plain) > 4
        assert 0.03 < moved.mean() < 0.6  # on the box, in bands, lighter
        assert (ribbed - plain)[moved].mean() > 10


def test_rendering_depends_on_the_styles_drawn_from():
    a = np.asarray(render(1, "train", "S19", 4, 100, ("stamp",)))
    assert np.array_equal(a, np.asarray(render(1, "train", "S19", 4, 100, ("stamp",))))
    assert not np.array_equal(a, np.asarray(render(1, "train", "S19", 4, 100, ("dotmatrix",))))


def test_some_empty_boxes_carry_print_that_is_not_a_code_where_a_code_would_be(monkeypatch):
    """binsort-synth-13: of the empty frames with a box in them, PRINTED_EMPTY carry a lot
    number, date or quantity laid by a font-set style (carton, label, stamp) in the central
    area, as a code would be; never a code, and never in a style held out of the set."""
    import edge.imaging.box_images as bi

    laid = []

    def recorder(name):
        def lay(rng, nrng, face, text, rect):
            laid.append((name, text, rect, face.size))

        return lay

    monkeypatch.setattr(bi, "STYLES", {n: recorder(n) for n in STYLES})
    count = 120
    for i in range(count):
        render(3, "train", "empty", i, 48, tuple(STYLES))
    assert 0.15 * count < len(laid) < 0.4 * count  # about 0.55 * 0.5 of them
    assert {name for name, *_ in laid} == set(bi.PRINTED_STYLES)
    for _, text, (x0, y0, x1, y1), (fw, fh) in laid:
        assert text not in DEFAULT_CODES and len(text) > 3
        assert 0 <= x0 < x1 <= fw and 0 <= y0 < y1 <= fh
    laid.clear()
    for i in range(40):  # only styles that draw their own glyphs: no printed empties
        render(3, "train", "empty", i, 48, ("dotmatrix", "stencil"))
    for i in range(40):
        render(3, "train", "K11", i, 48, ("label",))
    assert laid and all(text == "K11" for _, text, *_ in laid)
    monkeypatch.setattr(bi, "PRINTED_EMPTY", 0.0)
    laid.clear()
    for i in range(count):
        render(3, "train", "empty", i, 48, tuple(STYLES))
    assert not laid


def test_styles_are_chosen_listed_and_held_out(tmp_path):
    assert parse_styles(None) is None and parse_styles("all") == tuple(STYLES)
    assert parse_styles("-stencil,-stamp") == ("carton", "label", "dotmatrix")
    assert parse_styles("stamp,label") == ("label", "stamp")
    with pytest.raises(BinsortError, match="unknown style inkjet"):
        parse_styles("label,inkjet")
    with pytest.raises(BinsortError, match="leaves no style"):
        parse_styles("stamp,-stamp")
    info = synthesise(str(tmp_path), count=2, size=48, seed=1, workers=1, styles=("stencil",))
    assert json.loads((tmp_path / "labels.json").read_text())["styles"] == ["stencil"]
    assert info["generator"] == "binsort-synth-13"
    out = subprocess.run(HOST + ["data", "styles"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and [ln.split()[0] for ln in out.stdout.splitlines()] == list(STYLES)
    out = subprocess.run(
        HOST + ["data", "synth", "--out", str(tmp_path / "x"), "--styles", "inkjet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "inkjet" in out.stderr


def _imports(path: pathlib.Path) -> set:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_held_out_renderers_share_no_code_with_the_generator():
    root = pathlib.Path(ROOT)
    for path in (root / "tools" / "renderers").glob("*.py"):
        names = _imports(path)
        assert not {n for n in names if n.split(".")[0] in ("host", "edge", "protocol")}, path
    for path in (root / "host").glob("*.py"):
        assert not any("renderers" in n for n in _imports(path)), path


def test_the_glyph_renderers_draw_every_default_code_and_light_print_on_crates():
    """marker and crate draw characters from their own glyph tables: every default code's
    characters are there; crate's print is lighter than the crate around it."""
    sys.path.insert(0, os.path.join(ROOT, "tools", "renderers"))
    import crate
    import marker

    from edge.imaging.box_images import DEFAULT_CODES

    for module in (marker, crate):
        assert set("".join(DEFAULT_CODES)) <= set(module.GLYPHS), module.__name__
    with pytest.raises(ValueError, match="no glyph"):
        crate.render("Q99", 0)
    img = np.asarray(crate.render("K11", 3).convert("L"), np.float64)
    assert np.array_equal(img, np.asarray(crate.render("K11", 3).convert("L"), np.float64))
    centre = img[35:85, 35:85]
    assert np.percentile(centre, 97) > np.median(centre) + 60  # light strokes on a dark crate


def test_the_plate_renderer_prints_embosses_and_etches_the_code():
    """Each of plate's marks changes the plate where the code is; thermal print and etching
    darken it, embossing (no ink) only lights and shades the code's edges; frames repeat."""
    import random

    sys.path.insert(0, os.path.join(ROOT, "tools", "renderers"))
    import plate

    def drawn(mode, code):
        rng = random.Random(5)
        return np.asarray(
            plate._plate(rng, np.random.default_rng(5), code, 330, 130, mode).convert("L"),
            np.float64,
        )[20:-20, 40:-40]

    for mode in plate.MODES:
        change = drawn(mode, "S19") - drawn(mode, None)
        assert np.abs(change).mean() > 4, mode
        if mode == "embossed":
            assert (change > 20).mean() > 0.02 and (change < -20).mean() > 0.02
        else:
            assert change.mean() < -4, mode
    frame = np.asarray(plate.render("V22", 7))
    assert frame.shape == (plate.SIZE, plate.SIZE, 3)
    assert np.array_equal(frame, np.asarray(plate.render("V22", 7)))
    assert not np.array_equal(frame, np.asarray(plate.render("V22", 8)))


def test_the_sticker_and_plate_renderers_typefaces_are_never_drawn_by_the_generator():
    sys.path.insert(0, os.path.join(ROOT, "tools", "renderers"))
    import plate
    import sticker

    faces = {os.path.basename(p) for p in sticker.FONT_FILES}
    assert len(faces) == 4  # matplotlib, a host dependency, ships all four
    adventor = {os.path.basename(p) for p in plate.FONT_FILES}
    assert len(adventor) == 4  # fonts-texgyre, which tools/setup-system installs
    assert faces | adventor == set(HELD_OUT_FONTS)
    assert not (faces | adventor) & {os.path.basename(p) for p in system_fonts()}
    families = {os.path.basename(os.path.dirname(p)) for p in system_fonts()}
    assert len(system_fonts()) > 50 and {"liberation2", "ocr-a", "ttf", "dseg"} <= families
    # DSEG14's 14-segment print, not DSEG7's (no K or V) nor its Weather icons
    dseg = {os.path.basename(p).split("-")[0] for p in system_fonts() if "DSEG" in p}
    assert dseg == {"DSEG14Classic", "DSEG14Modern"}


RENDERERS = ("sticker", "marker", "crate", "plate", "pallet", "bag")


def test_the_pallet_renderer_bridges_counters_as_a_stencil_must():
    """A stencil cannot hold an island: the counter of a 0 hangs from two bridges (its ink falls
    into two pieces), a letter without a counter is not cut; frames are 4:3 RGB, and
    the frame is drawn again the same from its seed."""
    from PIL import ImageFont

    sys.path.insert(0, os.path.join(ROOT, "tools", "renderers"))
    import pallet

    assert len(pallet.FONT_FILES) == 4  # tools/setup-system installs all four faces' packages
    font = ImageFont.truetype(pallet.FONT_FILES[0], 60)

    def glyph(ch):
        img = Image.new("L", (60, 70))
        ImageDraw.Draw(img).text((5, -5), ch, font=font, fill=255)
        return np.asarray(img) > 127

    def pieces(mask):
        img = Image.fromarray(mask.astype(np.uint8) * 255).copy()
        count = 0
        for y, x in zip(*np.nonzero(np.asarray(img) == 255), strict=True):
            if img.getpixel((int(x), int(y))) == 255:
                ImageDraw.floodfill(img, (int(x), int(y)), 100 + count)
                count += 1
        return count

    zero = glyph("0")
    assert pieces(zero) == 1 and pieces(pallet.bridged(zero, 6)) == 2
    cut = zero & ~pallet.bridged(zero, 6)
    assert 0 < cut.sum() < 0.2 * zero.sum()
    assert np.array_equal(pallet.bridged(glyph("K"), 6), glyph("K"))
    frame = np.asarray(pallet.render("S19", 4))
    assert frame.shape == (pallet.H, pallet.W, 3)
    assert np.array_equal(frame, np.asarray(pallet.render("S19", 4)))
    assert not np.array_equal(frame, np.asarray(pallet.render("S19", 5)))


def test_the_bag_renderer_bends_the_print_with_the_film():
    """The film's warp moves pixels by a field that varies across the bag (not one turn or
    shift for the whole print), within a fraction of the code's height; with no displacement
    the print is left as drawn, and a whole-pixel shift moves it by that pixel."""
    sys.path.insert(0, os.path.join(ROOT, "tools", "renderers"))
    import bag

    assert len(bag.FONT_FILES) == len(bag._FACES)  # tools/setup-system installs their packages
    img = np.random.default_rng(0).random((30, 40, 3))
    zero = np.zeros((30, 40))
    assert np.allclose(bag.warp(img, zero, zero), img)
    assert np.allclose(bag.warp(img, zero + 2, zero)[:, :-3], img[:, 2:-1])
    for i in range(4):
        height, dx, dy = bag.wrinkles(random.Random(i), np.random.default_rng(i), 300, 200, 60)
        assert np.abs(dx).max() < 0.35 * 60 and np.abs(dy).max() < 0.35 * 60
        # not rigid: the stretch and shear change from place to place
        assert np.gradient(dx, axis=1).std() > 0.01 and np.gradient(dy, axis=0).std() > 0.01
        assert height.std() > 1
    frame = np.asarray(bag.render("K11", 3))
    assert frame.shape == (bag.H, bag.W, 3)
    assert np.array_equal(frame, np.asarray(bag.render("K11", 3)))
    assert not np.array_equal(frame, np.asarray(bag.render("K11", 4)))


def generalisation(*args) -> dict:
    """tools/generalisation with --json; its rows."""
    out = subprocess.run(
        [sys.executable, "tools/generalisation", *args, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)["rows"]


def test_generalisation_tool_scores_a_model_on_every_renderer_and_style(tmp_path, tiny_model):
    model = tmp_path / "m.bnn"
    model.write_bytes(tiny_model[1])
    rows = generalisation("eval", str(model), "--count", "2", "--work", str(tmp_path / "w"))
    assert set(rows) == {"renderer " + n for n in RENDERERS} | {
        "generator, " + s for s in tuple(STYLES) + ("classic",)
    }
    assert all(r["n"] == 10 and 0 <= r["accuracy"] <= 1 for r in rows.values())
    # the same --work folder for a smaller --count: its set is the first image a label only
    rows = generalisation("eval", str(model), "--count", "1", "--work", str(tmp_path / "w"))
    assert all(r["n"] == 5 for r in rows.values())


def test_generalisation_stress_scores_every_change_on_every_renderer(tmp_path, tiny_model):
    model = tmp_path / "m.bnn"
    model.write_bytes(tiny_model[1])
    work = str(tmp_path / "w")
    rows = generalisation("stress", str(model), "--count", "2", "--work", work)
    assert list(rows)[0] == "as drawn" and len(rows) == 6
    assert all(set(r) == set(RENDERERS) for r in rows.values())
    plain = generalisation("eval", str(model), "--count", "2", "--work", work)
    for name, accuracy in rows["as drawn"].items():  # the same images, the same engine
        assert accuracy == plain["renderer " + name]["accuracy"]


def test_a_reused_work_set_drawn_by_another_generator_is_drawn_again(tmp_path):
    """A --work folder outlives the generator that filled it: its sets say which version drew
    them, and one drawn by another (or that does not say) is not scored as this one's."""
    tool = load_tool()
    drawn = []

    def draw(label, i):
        drawn.append((label, i))
        return Image.new("L", (4, 4), len(drawn))

    folder = str(tmp_path / "sizes" / "10-12%")
    tool.generator_set(folder, ["F06"], 2, draw, "binsort-synth-7")
    tool.generator_set(folder, ["F06"], 3, draw, "binsort-synth-7")  # reused: one more drawn
    assert drawn == [("F06", 0), ("F06", 1), ("F06", 2)]
    tool.generator_set(folder, ["F06"], 3, draw, "binsort-synth-8")
    assert drawn[3:] == [("F06", 0), ("F06", 1), ("F06", 2)]
    os.remove(os.path.join(folder, ".generator"))  # a set from before the stamp
    tool.generator_set(folder, ["F06"], 1, draw, "binsort-synth-8")
    assert drawn[6:] == [("F06", 0)] and sorted(os.listdir(os.path.join(folder, "F06"))) == [
        "00000.png"
    ]
    # the held-out renderers' sets too, stamped with their source's digest
    work = str(tmp_path / "work")
    bags = tool.heldout_sets(work, ["K11"], 1)["bag"]
    source = pathlib.Path(ROOT, "tools", "renderers", "bag.py").read_bytes()
    with open(os.path.join(bags, ".generator")) as f:
        assert f.read().split() == ["bag", hashlib.sha256(source).hexdigest()[:16]]
    with open(os.path.join(bags, ".generator"), "w") as f:
        f.write("bag 0000000000000000\n")  # drawn by an older bag.py
    stale = Image.new("RGB", (4, 4))
    stale.save(os.path.join(bags, "K11", "00000.png"))
    tool.heldout_sets(work, ["K11"], 1)
    assert Image.open(os.path.join(bags, "K11", "00000.png")).size == (128, 96)


def test_the_stress_changes_do_what_they_are_named():
    tool = load_tool()
    changes = tool._stresses()
    sys.path.insert(0, os.path.join(ROOT, "tools", "renderers"))
    import sticker

    im = sticker.render("K11", 1)
    a = np.asarray(im, np.int16)
    out = {name: change(im) for name, change in changes.items()}
    assert np.array_equal(np.asarray(out["as drawn"]), a)
    assert np.array_equal(np.asarray(out["inverted (light print on dark)"]), 255 - a)
    turned = np.asarray(out["turned 20 degrees more"], np.int16)
    assert turned.shape == a.shape and np.abs(turned - a).mean() > 10
    soft = np.asarray(out["defocus 1 px more"], np.int16)
    assert np.abs(np.diff(soft, axis=1)).mean() < 0.8 * np.abs(np.diff(a, axis=1)).mean()
    bright = np.asarray(out["overexposed (+60 grey levels)"], np.int16)
    assert np.array_equal(bright, np.minimum(a + 60, 255))
    far = out["from 1.2 times further away"]
    assert far.size == (120, 120) and np.array_equal(np.asarray(far, np.int16)[10:110, 10:110], a)


def test_leave_one_style_out_trains_without_the_style_and_scores_it(tmp_path):
    rows = generalisation(
        "loso", "--arch", "tiny", "--count", "4", "--test-count", "2", "--epochs", "1",
        "--styles", "stamp", "--work", str(tmp_path),
    )  # fmt: skip
    assert list(rows) == ["without stamp"]
    assert rows["without stamp"]["held out"]["n"] == 10
    info = json.loads((tmp_path / "loso-data-stamp" / "labels.json").read_text())
    assert info["styles"] == ["carton", "label", "dotmatrix", "stencil"]


def test_the_code_height_band_is_honoured_drawn_per_octave_and_the_default_is_named(monkeypatch):
    """`code_height` bounds the code's box the style draws into, drawn log-uniformly (as many
    codes below the band's geometric middle as above it); the default band is CODE_HEIGHT,
    with the very same frames as a call that does not name it."""
    from edge.imaging import box_images

    heights = []
    carton = STYLES["carton"]

    def spy(rng, nrng, face, code, box):
        heights.append((box[3] - box[1]) / 200)  # drawn at twice the 100-pixel frame
        carton(rng, nrng, face, code, box)

    monkeypatch.setitem(STYLES, "carton", spy)
    for i in range(6):
        box_images.render(3, "t", "K11", i, 100, ("carton",), code_height=(0.2, 0.25))
    assert len(heights) >= 6 and all(0.195 <= h <= 0.25 for h in heights)
    heights.clear()
    default = [np.asarray(box_images.render(3, "t", "K11", i, 100, ("carton",))) for i in range(6)]
    assert all(0.075 <= h <= 0.35 for h in heights) and box_images.CODE_HEIGHT == (0.08, 0.35)
    named = box_images.render(3, "t", "K11", 0, 100, ("carton",), code_height=(0.08, 0.35))
    assert np.array_equal(np.asarray(named), default[0])
    heights.clear()
    for i in range(200):  # uniform over 8-35% would put 32% below the middle (16.7%), not half
        box_images.render(5, "t", "F06", i, 100, ("carton",))
    below = sum(h < (0.08 * 0.35) ** 0.5 for h in heights[:200]) / 200
    assert 0.4 <= below <= 0.6, below


def test_generalisation_tool_scores_a_model_against_code_height(tmp_path, tiny_model):
    model = tmp_path / "m.bnn"
    model.write_bytes(tiny_model[1])
    rows = generalisation("sizes", str(model), "--count", "1", "--work", str(tmp_path / "w"))
    assert list(rows) == ["8-10%", "10-12%", "12-15%", "15-20%", "20-27%", "27-35%"]
    for r in rows.values():  # codes only: no empty frames, and no empty label in the table
        assert r["n"] == 4 and set(r["per_label"]) == {"F06", "K11", "S19", "V22"}


def test_foreign_codes_are_the_labels_characters_recombined_and_none_of_the_labels():
    tool = load_tool()
    labels = ["F06", "K11", "S19", "V22", "empty"]
    codes = tool.recombined_codes(labels)
    assert len(codes) == 4 * 3 * 4 - 4 and len(set(codes)) == len(codes)
    assert {"F19", "K06", "V11", "S22"} <= set(codes) and not set(codes) & set(labels)
    assert all(c[0] in "FKSV" and c[1] in "012" and c[2] in "1269" for c in codes)
    assert tool.recombined_codes(["A1", "B2", "LONG1", "empty"]) == ["A2", "B1"]
    with pytest.raises(BinsortError, match="make no other code"):
        tool.recombined_codes(["F06", "empty"])


def test_generalisation_foreign_scores_other_codes_on_the_generator_and_every_renderer(
    tmp_path, tiny_model
):
    model = tmp_path / "m.bnn"
    model.write_bytes(tiny_model[1])
    work = tmp_path / "w"
    rows = generalisation("foreign", str(model), "--count", "1", "--work", str(work))
    assert list(rows) == ["generator", *RENDERERS]
    for name, r in rows.items():
        assert r["foreign"] == 44 and r["own"] == 44  # 11 frames of each of the 4 own codes
        for key in ("foreign_sorted", "own_sorted_right"):
            shares = list(r[key].values())
            assert list(r[key]) == ["0.6", "0.8", "0.9", "0.95"]
            assert all(0 <= a <= 1 for a in shares) and shares == sorted(shares, reverse=True)
        other = sorted(os.listdir(work / "foreign" / name / "other"))
        assert [c for c in other if not c.startswith(".")] == sorted(
            load_tool().recombined_codes(["F06", "K11", "S19", "V22", "empty"])
        )
        assert sorted(os.listdir(work / "foreign" / name / "own" / "K11")) == [
            "%05d.png" % i for i in range(11)
        ]
    # the shares are what the engine says of those frames, read as binsort eval reads them
    from edge.engine import load_engine
    from edge.imaging.preprocess import load_inputs
    from edge.imaging.views import view_probabilities

    engine = load_engine(str(model))
    folder = work / "foreign" / "crate" / "other"
    paths = sorted(str(p) for p in folder.glob("*/*.png"))
    p = view_probabilities(engine, load_inputs(paths, *engine.model.input_shape), 9)[0]
    best = np.delete(p, engine.model.labels.index("empty"), axis=1).max(axis=1)
    for t in (0.6, 0.8, 0.9, 0.95):
        assert rows["crate"]["foreign_sorted"][str(t)] == round(float((best >= t).mean()), 4)
    called = p.argmax(axis=1) == engine.model.labels.index("empty")
    assert rows["crate"]["foreign_called_empty"] == round(float(called.mean()), 4)


def load_tool():
    import importlib.util
    from importlib.machinery import SourceFileLoader

    loader = SourceFileLoader("generalisation", os.path.join(ROOT, "tools", "generalisation"))
    tool = importlib.util.module_from_spec(
        importlib.util.spec_from_loader("generalisation", loader)
    )
    loader.exec_module(tool)
    return tool


def test_generalisation_foreign_refuses_a_model_with_no_other_code_or_no_empty_class(tmp_path):
    from host.pack import pack_model
    from host.untrained import untrained_checkpoint

    for labels, why in (
        (["F06", "empty"], "make no other code"),
        (["F06", "K11", "S19", "V22"], "no 'empty' class"),
    ):
        model = tmp_path / "m.bnn"
        net = random_bn_model_for("tiny", len(labels))
        model.write_bytes(pack_model(untrained_checkpoint("tiny", labels), net))
        out = subprocess.run(
            [
                sys.executable,
                "tools/generalisation",
                "foreign",
                str(model),
                "--work",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def random_bn_model_for(arch: str, classes: int):
    import torch

    from host.models import BinaryNet

    torch.manual_seed(1)
    return BinaryNet(arch, classes).eval()
