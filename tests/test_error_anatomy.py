"""tools/error-anatomy: what it records of each frame is what the generator drew, and watching
the generator changes none of its frames."""

import importlib.util
import json
import os
import subprocess
import sys
from importlib.machinery import SourceFileLoader

import numpy as np
import pytest

from edge.imaging.box_images import PRINTED_STYLES, render
from edge.imaging.code_styles import STYLES
from protocol.errors import BinsortError

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOOL = os.path.join(ROOT, "tools", "error-anatomy")


def _tool():
    loader = SourceFileLoader("error_anatomy", TOOL)
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader("error_anatomy", loader)
    )
    loader.exec_module(module)
    return module


def test_watching_the_generator_leaves_its_frames_bit_for_bit_and_records_what_it_drew():
    tool = _tool()
    labels = ["F06", "K11", "empty"]
    frames, records = tool.draw(labels, 6, 64, 99, "all")
    for frame, r in zip(frames, records, strict=True):
        plain = np.asarray(render(99, "anatomy", r["label"], r["index"], 64, "all"))
        assert np.array_equal(frame, plain)
        if r["label"] == "empty":  # some boxes without a code carry other print
            assert r["style"] is None and "height" not in r and "contrast" not in r
            assert r["print"] in (None, *PRINTED_STYLES) and not r["barcode"]
        else:
            assert r["style"] in STYLES and 0.07 < r["height"] < 0.36 and r["contrast"] > 0
            assert r["sigmas"] >= 3  # render draws a code again when it is fainter than that
    assert STYLES["carton"].__name__ == "carton"  # the generator is left as it was


def test_the_record_reads_back_a_forced_code_height_style_and_typeface():
    tool = _tool()
    record = {}
    with tool.watching(record):
        render(7, "anatomy", "S19", 0, 64, "all", code_height=(0.08, 0.09))
        seen = dict(record)
    assert 0.075 < seen["code_px"] / 64 < 0.095
    _, records = tool.draw(["S19"], 8, 64, 7, ("label",))
    assert {r["style"] for r in records} == {"label"}
    assert all(r["font"] for r in records)  # the typeface the code's text took, not small print
    assert len({r["font"] for r in records}) > 1


def test_the_tool_scores_a_model_and_says_a_bad_argument_in_one_line(tiny_model, tmp_path):
    path = tmp_path / "tiny.bnn"
    path.write_bytes(tiny_model[1])
    run = [sys.executable, TOOL, str(path), "--count", "3", "--json"]
    out = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    records = report["records"]
    assert report["frames"] == len(records) == 3 * 5
    right = [r["decided"] == r["label"] for r in records]
    assert report["accuracy"] == round(sum(right) / len(right), 4)
    style_rows = report["factors"]["style"]
    assert sum(r["n"] for r in style_rows.values()) == report["codes"]["n"] == 12
    bands = list(report["factors"]["code height (share of the frame)"])
    assert bands == sorted(bands, key=lambda b: float(b.split("-")[0]))
    bad = subprocess.run(run[:3] + ["--count", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--count" in bad.stderr
    for args, said in (
        ([str(tmp_path / "gone.bnn")], "no such model"),
        ([str(path), "--styles", "label,emboss"], "unknown style 'emboss'"),
    ):
        bad = subprocess.run(run[:2] + args, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and said in bad.stderr


def test_the_sheet_shows_each_misread_frame_twice_its_size_under_its_caption(tmp_path):
    tool = _tool()
    frames = [np.full((8, 8), v, dtype=np.uint8) for v in (10, 200, 90, 250)]
    records = [
        {"label": "F06", "decided": "K11", "right": False, "style": "stamp"},
        {"label": "K11", "decided": "K11", "right": True, "style": "label"},
        {"label": "empty", "decided": "S19", "right": False, "style": None, "print": "label"},
        {"label": "V22", "decided": "F06", "right": False, "style": "carton"},
    ]
    for r in records:
        r.update(height=0.12, sigmas=7.5)
    probs = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.2, 0.2]])
    path = tmp_path / "errors.png"
    assert tool.write_sheet(str(path), frames, records, probs, limit=2) == 2
    from PIL import Image

    sheet = np.asarray(Image.open(path).convert("L"))
    side, top = 16, tool.CAPTION
    assert sheet.shape == (side + top, tool.SHEET_COLUMNS * side)
    # the first two misread frames (not the one read right), in the order drawn
    assert (sheet[top:, :side] == 10).all() and (sheet[top:, side : 2 * side] == 90).all()
    assert (sheet[top:, 2 * side :] == 0).all()
    assert tool.caption(1, records[0], 0.7) == ("1  F06 -> K11  p 0.70", "stamp  h 12%  7.5 sigma")
    assert tool.caption(2, records[2], 0.4)[1] == "empty, print: label"
    assert os.listdir(tmp_path) == ["errors.png"]  # nothing half-written beside it
    # with none misread, an older sheet at the path is replaced by one caption that says so
    none = tmp_path / "none.png"
    none.write_bytes(path.read_bytes())
    assert tool.write_sheet(str(none), frames[1:2], records[1:2], probs, 9) == 0
    told = np.asarray(Image.open(none).convert("L"))
    assert told.shape == (top, tool.SHEET_COLUMNS * 100) and told.max() > 0
    none.unlink()
    # a sheet that cannot be written under its name is one clear error, with no part left
    (tmp_path / "taken").mkdir()
    with pytest.raises(BinsortError, match="--sheet .*taken: cannot write it"):
        tool.write_sheet(str(tmp_path / "taken"), frames, records, probs, 2)
    assert sorted(os.listdir(tmp_path)) == ["errors.png", "taken"]


def test_the_tool_writes_its_sheet_and_refuses_a_sheet_it_cannot_write(tiny_model, tmp_path):
    path = tmp_path / "tiny.bnn"
    path.write_bytes(tiny_model[1])
    sheet = tmp_path / "errors.png"
    run = [sys.executable, TOOL, str(path), "--count", "2", "--json"]
    out = subprocess.run(
        run + ["--sheet", str(sheet), "--sheet-max", "3"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    misread = sum(r["decided"] != r["label"] for r in report["records"])
    assert report["sheet"] == {"path": str(sheet), "frames": min(3, misread)}
    assert sheet.exists()  # with none misread it says so (the tiny model misreads some)
    for args, said in (
        (["--sheet", str(tmp_path / "no" / "e.png")], "its folder does not exist"),
        (["--sheet", str(sheet), "--sheet-max", "0"], "--sheet-max"),
    ):
        bad = subprocess.run(run + args, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and said in bad.stderr
    assert not (tmp_path / "no").exists()
