"""`binsort train --init`: fine-tuning a trained model on real folders mixed with a base set, or
on a folder alone; labels and architecture must match the model's, in one clear line if not."""

import json
import os

import torch

from edge.imaging.box_images import render
from tests.test_cli import assert_clean_error, run


def real_folder(root, labels, count=6, styles=("stencil",)) -> str:
    """A folder of label sub-folders, as `binsort data pull` leaves one."""
    for label in labels:
        os.makedirs(root / label, exist_ok=True)
        for i in range(count):
            render(7, "line", label, i, 100, styles).save(root / label / ("%03d.png" % i))
    return str(root)


def test_fine_tuning_on_base_plus_real_keeps_the_models_labels(trained_run, tmp_path):
    real = real_folder(tmp_path / "line", ["K11", "V22"])
    base = str(trained_run / "data")
    code, out, err = run(
        "train",
        "--data",
        "%s+%s" % (base, real),
        "--init",
        str(trained_run / "run"),
        "--out",
        str(tmp_path / "tuned"),
        "--epochs",
        "1",
        "--quiet",
    )
    assert code == 0, err
    assert "on %s" % real in out  # the real folder's own test accuracy is reported
    ckpt = torch.load(tmp_path / "tuned" / "checkpoint.pt", weights_only=True)
    start = torch.load(trained_run / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["labels"] == start["labels"] and ckpt["arch"] == "tiny"
    assert ckpt["sources"] == [os.path.abspath(base), os.path.abspath(real)]
    assert ckpt["binarize_ramp"] == 0.0  # the model is binary already: no ramp back
    before, after = start["state_dict"], ckpt["state_dict"]
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.endswith(".weight") for k in moved)  # it trained from the checkpoint's weights
    # the BatchNorm statistics the base set measured stay: a few real images must not move them
    assert not [k for k in moved if k.endswith(("running_mean", "running_var"))]
    with open(tmp_path / "tuned" / "metrics.json") as f:
        assert set(json.load(f)["test_by_source"]) == {base, real}


def test_a_folder_of_photos_alone_fine_tunes(trained_run, tmp_path):
    real = real_folder(tmp_path / "photos", ["F06", "K11", "S19", "V22", "empty"], count=5)
    code, out, err = run(
        "train", "--data", real, "--init", str(trained_run / "run" / "checkpoint.pt"),
        "--out", str(tmp_path / "t"), "--epochs", "1", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "test accuracy" in out


def test_a_label_the_model_does_not_know_is_one_line(trained_run, tmp_path):
    real = real_folder(tmp_path / "line", ["K11", "X99"], count=5)
    code, _, err = run(
        "train", "--data", real, "--init", str(trained_run / "run"), "--out", str(tmp_path / "t"),
    )  # fmt: skip
    assert_clean_error(code, err, "X99", "does not know", "F06, K11")
    assert not os.path.exists(tmp_path / "t" / "checkpoint.pt")


def test_init_from_another_architecture_is_one_line(trained_run, tmp_path):
    code, _, err = run(
        "train", "--data", str(trained_run / "data"), "--init", str(trained_run / "run"),
        "--arch", "bcnn", "--out", str(tmp_path / "t"),
    )  # fmt: skip
    assert_clean_error(code, err, "tiny model, not bcnn")


def test_a_real_weight_out_of_range_or_without_real_folders_is_one_line(trained_run, tmp_path):
    base = str(trained_run / "data")
    real = real_folder(tmp_path / "line", ["K11"], count=5)
    args = ["train", "--init", str(trained_run / "run"), "--out", str(tmp_path / "t")]
    code, _, err = run(*args, "--data", "%s+%s" % (base, real), "--real-weight", "1.5")
    assert_clean_error(code, err, "between 0 and 1")
    code, _, err = run(*args, "--data", base, "--real-weight", "0.5")
    assert_clean_error(code, err, "needs real folders")
    code, _, err = run(*args, "--data", "%s+%s" % (base, tmp_path / "nowhere"))
    assert_clean_error(code, err, "no such data folder")
