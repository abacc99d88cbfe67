"""The command lines: outputs on good input, one-line errors and status 2 on bad input."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge.imaging.box_images import render


def run(*args, module="host.cli"):
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def run_here(*args):
    """`binsort ARGS` in this process (the command line's own main, stdout and stderr caught):
    a second a command less than a fresh interpreter importing torch."""
    import contextlib
    import io

    from host.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_clean_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def packed(trained_run):
    out = trained_run / "model.bnn"
    code, stdout, _ = run("pack", str(trained_run / "run" / "checkpoint.pt"), "--out", str(out))
    assert code == 0 and "smaller" in stdout
    return out


def test_classify_prints_one_json_object_per_image(packed, trained_run):
    folder = trained_run / "data" / "test"
    code, out, _ = run("classify", "--model", str(packed), str(folder), module="edge.cli")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 15  # 3 test images for each of 5 labels
    for row in rows:
        assert set(row) == {"path", "label", "confidence", "views", "scores", "int_scores"}
        assert row["label"] in LABELS and set(row["scores"]) == set(LABELS)
        assert 0 < row["confidence"] <= 1 and row["views"] == 9


LABELS = ["F06", "K11", "S19", "V22", "empty"]


def written_views(engine, x) -> list:
    """The class probabilities of the default views, each scored once: the inputs, their four
    copies moved 4 pixels right, left, down and up (edge pixels repeated), written out here with
    np.pad, not with the edge's code, then the inputs turned 6 and 10 degrees each way
    (edge.imaging.views.turned, which tests/test_views.py checks against Pillow's turn)."""
    from edge.imaging.views import turned

    h, w = x.shape[1:]
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4)), mode="edge")
    views = [
        padded[:, 4 - dy : 4 - dy + h, 4 - dx : 4 - dx + w]
        for dy, dx in ((0, 0), (0, 4), (0, -4), (4, 0), (-4, 0))
    ]
    views += [turned(x, degrees) for degrees in (6, -6, 10, -10)]
    probs = []
    for view in views:
        real = engine.scores(view) * engine.out_scale
        e = np.exp(real - real.max(axis=1, keepdims=True))
        probs.append(e / e.sum(axis=1, keepdims=True))
    return probs


@pytest.fixture(scope="module")
def view_folder(tmp_path_factory):
    """8 rendered frames a label, in label folders: on these the trained tiny model's views
    decide some frames otherwise than one view does (the tests check it)."""
    root = tmp_path_factory.mktemp("views")
    for label in LABELS:
        (root / label).mkdir()
        for i in range(8):
            render(11, "views", label, i, 100).save(root / label / ("%02d.png" % i))
    return root


def test_classify_decides_from_the_mean_probabilities_of_its_views(packed, view_folder):
    """The label and confidence are those of the mean softmax of the nine views (five with
    --views 5, the shifts alone); with --views 1 they are the image's own; the scores printed
    are always the image's own."""
    from edge.engine import load_engine
    from edge.imaging.preprocess import load_inputs

    paths = sorted(str(p) for p in view_folder.glob("*/*.png"))
    engine = load_engine(str(packed))
    x = load_inputs(paths, *engine.model.input_shape)
    probs = written_views(engine, x)
    nine, five = np.mean(probs, axis=0), np.mean(probs[:5], axis=0)
    assert (nine.argmax(1) != probs[0].argmax(1)).any()  # the views decide some differently
    assert (nine.argmax(1) != five.argmax(1)).any()  # and the turned views count
    labels = engine.model.labels
    for views, want in ((None, nine), (5, five), (1, probs[0])):
        choice = [] if views is None else ["--views", str(views)]
        code, out, err = run("classify", *choice, "--model", str(packed), *paths, module="edge.cli")
        rows = [json.loads(line) for line in out.splitlines()]
        assert code == 0, err
        assert [r["views"] for r in rows] == [views or 9] * len(paths)
        assert [r["label"] for r in rows] == [labels[i] for i in want.argmax(axis=1)]
        assert np.allclose([r["confidence"] for r in rows], want.max(axis=1), atol=2e-6)
        assert [r["int_scores"] for r in rows] == engine.scores(x).tolist()


def test_eval_scores_the_views_and_keeps_the_one_view_accuracy(packed, view_folder):
    from edge.engine import load_engine
    from host.evaluate import load_labelled

    engine = load_engine(str(packed))
    images, truth = load_labelled(engine, str(view_folder))
    probs = written_views(engine, images)
    nine = float((np.mean(probs, axis=0).argmax(1) == truth).mean())
    five = float((np.mean(probs[:5], axis=0).argmax(1) == truth).mean())
    one = float((probs[0].argmax(1) == truth).mean())
    assert len({nine, five, one}) == 3  # on these images each view set reads differently
    for views, want in ((None, nine), (5, five), (1, one)):
        choice = [] if views is None else ["--views", str(views)]
        code, out, err = run(
            "eval", "--model", str(packed), "--data", str(view_folder), "--json", *choice
        )
        result = json.loads(out)
        assert code == 0, err
        assert result["views"] == (views or 9) and result["n"] == 40
        assert result["accuracy"] == want and result["one_view_accuracy"] == one


def test_eval_json_reports_accuracy_n_and_confusion(packed, trained_run):
    code, out, _ = run(
        "eval", "--model", str(packed), "--data", str(trained_run / "data" / "test"), "--json"
    )
    result = json.loads(out)
    assert code == 0 and result["n"] == 15 and 0 <= result["accuracy"] <= 1
    assert sum(map(sum, result["confusion"])) == 15
    assert result["views"] == 9 and 0 <= result["one_view_accuracy"] <= 1
    code, out, _ = run(
        "eval",
        "--model",
        str(packed),
        "--data",
        str(trained_run / "data" / "test"),
        "--json",
        "--views",
        "1",
    )
    once = json.loads(out)
    assert code == 0 and once["views"] == 1
    assert once["accuracy"] == once["one_view_accuracy"] == result["one_view_accuracy"]


@pytest.mark.parametrize("damage", ["truncate", "magic", "flip"])
def test_damaged_model_is_a_one_line_error(packed, tmp_path, damage):
    data = bytearray(packed.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "magic":
        data[:4] = b"XXXX"
    else:
        data[200] ^= 1
    bad = tmp_path / "bad.bnn"
    bad.write_bytes(bytes(data))
    img = tmp_path / "a.png"
    render(0, "t", "F06", 0).save(img)
    code, _, err = run("classify", "--model", str(bad), str(img), module="edge.cli")
    assert_clean_error(code, err, "bad.bnn")


def test_unreadable_image_is_a_one_line_error(packed, tmp_path):
    img = tmp_path / "nope.png"
    img.write_text("not an image")
    code, _, err = run("classify", "--model", str(packed), str(img), module="edge.cli")
    assert_clean_error(code, err, "cannot read image", "nope.png")


def test_data_folder_without_classes_is_a_one_line_error(packed, tmp_path):
    code, _, err = run("eval", "--model", str(packed), "--data", str(tmp_path))
    assert_clean_error(code, err, "no class folders")


def test_checkpoint_of_another_architecture_is_a_one_line_error(trained_run, tmp_path):
    ckpt = torch.load(trained_run / "run" / "checkpoint.pt", weights_only=True)
    ckpt["arch"] = "bcnn"
    torch.save(ckpt, tmp_path / "other.pt")
    code, _, err = run("pack", str(tmp_path / "other.pt"), "--out", str(tmp_path / "m.bnn"))
    assert_clean_error(code, err, "does not match architecture 'bcnn'")
    assert not (tmp_path / "m.bnn").exists()


def test_file_that_is_not_a_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"garbage")
    code, _, err = run("pack", str(tmp_path / "x.pt"), "--out", str(tmp_path / "m.bnn"))
    assert_clean_error(code, err, "x.pt is not a training checkpoint but a text file")
    (tmp_path / "x.pt").write_bytes(bytes(range(7, 200)))  # nothing known: torch tries it
    code, _, err = run("pack", str(tmp_path / "x.pt"), "--out", str(tmp_path / "m.bnn"))
    assert_clean_error(code, err, "cannot read checkpoint")
    assert not (tmp_path / "m.bnn").exists()
    (tmp_path / "x.pt").write_bytes(b"")  # a copy that did not finish
    for command in (
        ["pack", str(tmp_path / "x.pt"), "--out", str(tmp_path / "m.bnn")],
        [
            "train",
            "--init",
            str(tmp_path / "x.pt"),
            "--data",
            "synth",
            "--out",
            str(tmp_path / "r"),
        ],
    ):
        code, _, err = run(*command)
        assert_clean_error(code, err, "x.pt is empty")


def test_pack_refuses_data_it_would_not_use(trained_run, tmp_path):
    """--data measures a stream's prefixes; for a .bnn it used to be dropped without a word,
    so a mistyped folder (or one given in the belief it changes the model) went unseen."""
    code, _, err = run(
        "pack",
        str(trained_run / "run"),
        "--data",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "m.bnn"),
    )
    assert_clean_error(code, err, "--data measures the prefixes of a .pranc, .bsc or .bsd")
    assert not (tmp_path / "m.bnn").exists()


def test_unknown_architecture_is_a_one_line_error(tmp_path):
    code, _, err = run("train", "--data", str(tmp_path), "--arch", "resnet", "--out", str(tmp_path))
    assert_clean_error(code, err, "unknown architecture 'resnet'")


def test_synth_with_too_few_images_is_a_one_line_error(tmp_path):
    code, _, err = run("data", "synth", "--out", str(tmp_path / "d"), "--count", "1", "--quiet")
    assert_clean_error(code, err, "--count")


def test_pack_into_a_missing_folder_is_a_one_line_error_and_writes_nothing(trained_run, tmp_path):
    target = tmp_path / "no" / "such" / "m.bnn"
    code, _, err = run("pack", str(trained_run / "run"), "--out", str(target))
    assert_clean_error(code, err, "cannot write", "m.bnn")
    assert not (tmp_path / "no").exists()


def test_every_bad_host_argument_is_one_line_before_any_work_and_writes_nothing(
    trained_run, packed, tmp_path
):
    """Each of these once ended in a traceback, a wrong file, or an error only after minutes of
    training (issue 21): now one line, status 2, checked before any work, nothing written."""
    run_dir = str(trained_run / "run")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("line settings\n")
    out = tmp_path / "out"
    cases = [
        (["train", "--data", "synth", "--out", str(a_file)], "is a file, not a folder"),
        (["train", "--data", "synth", "--out", str(a_file / "run")], "cannot write to --out"),
        (["train", "--data", "synth", "--epochs", "0", "--out", str(out)], "--epochs"),
        (["train", "--data", "synth", "--batch-size", "0", "--out", str(out)], "--batch-size"),
        (["train", "--data", "synth", "--device", "gpu", "--out", str(out)], "auto, cpu, cuda"),
        (["pack", str(a_file), "--out", str(out) + ".bnn"], "not a training checkpoint"),
        (["pack", str(packed), "--out", str(out) + ".bnn"], "but a .bnn model"),
        (["pack", run_dir, "--out", str(out) + ".onnx"], "must end in .bnn"),
        (["pack", run_dir, "--out", str(tmp_path)], "is a folder"),
        (["pack", run_dir, "--out", str(out) + ".bnn", "--version", "-5"], "--version"),
        (["eval", "--model", str(packed), "--data", str(trained_run / "data")], "/test"),
        (["data", "synth", "--codes", "A1,A1", "--out", str(out)], "more than once"),
        (["data", "synth", "--codes", "empty,B2", "--out", str(out)], "no code"),
        (["data", "synth", "--codes", "a/b", "--out", str(out)], "not a box code"),
        (["data", "synth", "--count", "2", "--out", str(a_file)], "is a file"),
        # a side past any net's once asked numpy for (2 x side)^2 float64s: 298 GiB
        (["data", "synth", "--count", "2", "--size", "100000", "--out", str(out)], "16 to 1024"),
        (["data", "synth", "--styles", ",", "--out", str(out)], "names no style"),
        (
            ["demo", "--count", "0", "--out", str(out)],
            "--count must be at least 2",
        ),  # not "default"
    ]
    if not torch.cuda.is_available():
        cases.append(
            (["train", "--data", "synth", "--device", "cuda", "--out", str(out)], "no CUDA")
        )
    for args, words in cases:
        code, _, err = run_here(*args)
        assert_clean_error(code, err, words)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"], args
    assert a_file.read_text() == "line settings\n"


def test_both_command_lines_tell_their_version_and_formats():
    for module, prog in (("host.cli", "binsort"), ("edge.cli", "binsort-edge")):
        code, out, _ = run("--version", module=module)
        assert code == 0 and out.startswith(prog + " ") and ".bnn format 1.4" in out


def test_no_progress_bar_into_a_pipe(tmp_path):
    code, out, err = run("data", "synth", "--count", "2", "--out", str(tmp_path / "d"))
    assert code == 0 and "wrote 10 images" in out
    assert "synthesising" not in err and "\r" not in err


def test_the_curves_have_a_title_a_fixed_accuracy_axis_and_the_chance_line(trained_run):
    import matplotlib.pyplot as plt

    from host.train import plot_curves

    metrics = json.loads((trained_run / "run" / "metrics.json").read_text())
    made = []
    real_savefig = plt.Figure.savefig
    plt.Figure.savefig = lambda fig, *a, **k: made.append(fig)
    try:
        plot_curves(metrics, "unused.png")
    finally:
        plt.Figure.savefig = real_savefig
    fig = made[0]
    assert "tiny, 1 epoch, 5 labels" in fig._suptitle.get_text()
    accuracy = fig.axes[1]
    assert accuracy.get_ylim() == (0.0, 1.0)
    assert [tuple(line.get_ydata()) for line in accuracy.lines][-1] == (0.2, 0.2)


def test_json_reports_are_the_only_thing_on_stdout(trained_run, tmp_path):
    code, out, err = run("data", "synth", "--count", "2", "--out", str(tmp_path / "d"), "--json")
    assert code == 0 and json.loads(out)["images"] == 10 and "wrote 10 images" in err
    code, out, err = run("keys", "new", "--out", str(tmp_path / "k"), "--json")
    report = json.loads(out)
    assert code == 0 and report["key_id"] and report["public"].endswith("signing.pub")
    code, out, err = run(
        "train", "--data", str(trained_run / "data"), "--arch", "tiny", "--epochs", "1",
        "--out", str(tmp_path / "run"), "--quiet", "--json",
    )  # fmt: skip
    report = json.loads(out)
    assert code == 0 and report["epochs"] == 1 and 0 <= report["test_accuracy"] <= 1
    assert "epoch 1:" in err
    code, out, err = run("pack", str(tmp_path / "run"), "--out", str(tmp_path / "m.bnn"), "--json")
    report = json.loads(out)
    assert code == 0 and report["kind"] == "bnn"
    assert report["bytes"] == (tmp_path / "m.bnn").stat().st_size and "smaller" in err


def test_help_shows_every_default():
    code, out, _ = run("data", "synth", "--help")
    assert code == 0 and "(default: 0)" in out.split("--seed SEED", 2)[2]
    code, out, _ = run("ship", "--help")
    assert code == 0 and "(default 60)" in " ".join(out.split())
    code, out, _ = run("recalibrate", "--help", module="edge.cli")
    # a help text that gives its default is left as it is
    assert code == 0 and "(1000)" in out and "(default: 1000)" not in out


def test_inspect_tells_what_a_model_holds(packed):
    from protocol import bnn

    model = bnn.read_bnn_file(str(packed))
    code, out, err = run("inspect", str(packed))
    assert code == 0, err
    first_out = out
    assert "bnn, %d bytes" % packed.stat().st_size in out
    assert "labels F06, K11, S19, V22, empty" in out and "self-test: " in out
    assert out.count(" weight bytes") == len(model.layers) and "sections: META" in out
    code, out, _ = run("inspect", str(packed), "--json")
    report = json.loads(out)
    assert report["labels"] == model.labels and report["version"] == 1
    written = "%d.%d" % struct.unpack_from("<HH", packed.read_bytes(), 4)
    assert report["format"] == written and ", .bnn format %s" % written in first_out
    assert len(report["layers"]) == len(model.layers)
    # the sections and the 12-byte file header are the whole file
    assert sum(report["sections"].values()) + 12 == packed.stat().st_size
    code, _, err = run("inspect", str(packed.parent / "run" / "checkpoint.pt"))
    assert_clean_error(code, err, "PyTorch checkpoint", "binsort pack")
    data = bytearray(packed.read_bytes())
    for name, damaged in (("cut.bnn", data[: len(data) // 2]), ("flip.bnn", _flipped(data))):
        path = packed.parent / name
        path.write_bytes(bytes(damaged))
        code, _, err = run("inspect", str(path))
        assert_clean_error(code, err, name)


def _flipped(data: bytearray) -> bytearray:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x10  # inside the weights: the section's CRC no longer matches
    return out


def test_a_reader_that_goes_away_is_no_traceback():
    """`binsort inspect M | head`: the pipe closes under the writer."""
    code = (
        "import sys\n"
        "from protocol.errors import run_cli\n"
        "def command(args):\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "sys.exit(run_cli('binsort', command, None))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 141 and proc.stderr == ""


def test_edge_bench_times_every_engine_on_identical_scores(packed, monkeypatch):
    code, out, err = run(
        "bench", "--model", str(packed), "--runs", "3", "--batch", "4", "--portable", "--json",
        module="edge.cli",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    names = [row["engine"] for row in report["engines"]]
    assert "numpy" in names and names[-1] == "portable" and report["identical_scores"]
    assert all(row["ms_per_image"] > 0 and row["peak_rss_mib"] > 0 for row in report["engines"])
    code, _, err = run("bench", "--model", str(packed), "--runs", "0", module="edge.cli")
    assert_clean_error(code, err, "--runs")
    # a path that computes other scores is named, not timed
    from edge.bench import bench
    from edge.engine.numpy_engine import NumpyEngine
    from protocol.errors import BinsortError

    real = NumpyEngine.scores
    monkeypatch.setattr(NumpyEngine, "scores", lambda self, x: real(self, x) + 1)
    from edge.engine import native

    if native.available():
        with pytest.raises(BinsortError, match="engine numpy gives other scores"):
            bench(str(packed), runs=2, batch=2)


def test_train_on_synth_draws_the_frames_at_the_architectures_side(tmp_path, monkeypatch):
    """`--data synth` draws at the architecture's "synth_size" (bcnn144: 150 pixels for its
    144x144 input), 100 where it names none, and the run reads them at its input size."""
    from host import archs

    monkeypatch.setitem(archs.ARCHS, "tiny", dict(archs.ARCHS["tiny"], synth_size=48))
    assert archs.synth_size("bcnn144") == 150 and archs.synth_size("bcnn96h") == 100
    out = tmp_path / "run"
    code, _, err = run_here(
        "train", "--data", "synth", "--synth-count", "4", "--arch", "tiny", "--epochs", "1",
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "data" / "labels.json").read_text())["size"] == 48
    frame = next((out / "data" / "train" / "F06").iterdir())
    from PIL import Image

    assert Image.open(frame).size == (48, 48)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["input"] == 32


@pytest.mark.parametrize("command", ["eval", "classify"])
def test_a_views_count_without_a_view_set_is_refused(packed, tmp_path, command):
    img = tmp_path / "a.png"
    render(0, "t", "F06", 0).save(img)
    if command == "eval":
        code, out, err = run(
            "eval", "--model", str(packed), "--data", str(tmp_path), "--views", "4"
        )
    else:
        code, out, err = run(
            "classify", "--model", str(packed), str(img), "--views", "4", module="edge.cli"
        )
    assert code == 2 and not out and "Traceback" not in err
    assert "--views: invalid choice: 4 (choose from 1, 3, 5, 7, 9)" in err.splitlines()[-1]
