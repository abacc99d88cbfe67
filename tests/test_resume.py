"""binsort train saves its whole state after every epoch, and --resume goes on from it to the
same model as a run that was never stopped."""

import subprocess
import sys

import pytest
import torch

from host.train import RESUME_FILE, read_resume, train


class Stop(Exception):
    pass


def stop_after_epoch(n):
    def log(line):
        if line.startswith("epoch %d:" % n):
            raise Stop()

    return log


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_stopped_run_resumes_to_the_same_model_as_one_never_stopped(
    trained_run, tmp_path, precision
):
    data = str(trained_run / "data")
    options = {"arch": "tiny", "epochs": 3, "progress": False, "precision": precision}
    whole = train(data, str(tmp_path / "whole"), log=lambda s: None, **options)
    assert not (tmp_path / "whole" / RESUME_FILE).exists()  # a finished run leaves none
    assert whole["precision"] == precision

    with pytest.raises(Stop):
        train(data, str(tmp_path / "cut"), log=stop_after_epoch(2), **options)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    state = read_resume(str(tmp_path / "cut"))
    assert state["epoch"] == 2 and len(state["metrics"]["epochs"]) == 2

    from host.config import TrainConfig

    lines = []
    again = train(
        data,
        str(tmp_path / "cut"),
        TrainConfig(**state["config"]),
        progress=False,
        log=lines.append,
        resume=state,
    )
    assert "resuming at epoch 3 of 3" in lines
    assert [e["test_accuracy"] for e in again["epochs"]] == [
        e["test_accuracy"] for e in whole["epochs"]
    ]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "cut" / RESUME_FILE).exists()


def run(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "host.cli", "train", *args], capture_output=True, text=True
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_resume_through_the_cli_and_its_one_line_errors(trained_run, tmp_path):
    data = str(trained_run / "data")
    with pytest.raises(Stop):
        train(
            data,
            str(tmp_path / "r"),
            arch="tiny",
            epochs=2,
            progress=False,
            log=stop_after_epoch(1),
        )
    code, out, err = run("--resume", str(tmp_path / "r"), "--epochs", "5")
    assert code == 2 and "own --data, --init and --epochs" in err and err.count("\n") == 1
    code, out, err = run("--resume", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    assert "test accuracy" in out and "after 2 epochs" in out
    code, out, err = run("--resume", str(tmp_path / "r"))
    assert code == 2 and "that run finished" in err and err.count("\n") == 1
    code, out, err = run("--resume", str(tmp_path / "none"))
    assert code == 2 and "no such run folder" in err
    code, out, err = run("--out", str(tmp_path / "x"))
    assert code == 2 and "needs --data and --out" in err


def stop_at(prefix):
    def log(line):
        if line.startswith(prefix):
            raise Stop()

    return log


@pytest.mark.parametrize("where", ["teacher epoch 1:", "epoch 1:"])
def test_a_run_with_a_teacher_resumes_in_either_phase_to_the_same_model(
    trained_run, tmp_path, where
):
    """The real-valued twin trains first (teacher.pt), then the binary net; a run stopped in
    either phase goes on to the model of a run never stopped."""
    from host.config import TrainConfig

    data = str(trained_run / "data")
    options = {"arch": "tiny", "epochs": 2, "teacher_epochs": 2, "progress": False}
    whole = train(data, str(tmp_path / "whole"), log=lambda s: None, **options)
    assert [e["epoch"] for e in whole["teacher"]["epochs"]] == [1, 2]
    with pytest.raises(Stop):
        train(data, str(tmp_path / "cut"), log=stop_at(where), **options)
    state = read_resume(str(tmp_path / "cut"))
    assert state["phase"] == ("teacher" if where.startswith("teacher") else "student")
    assert TrainConfig(**state["config"]).epochs == 2  # the run's settings, not the phase's
    again = train(
        data,
        str(tmp_path / "cut"),
        TrainConfig(**state["config"]),
        progress=False,
        log=lambda s: None,
        resume=state,
    )
    assert again["teacher"]["test_accuracy"] == whole["teacher"]["test_accuracy"]
    for name in ("checkpoint.pt", "teacher.pt"):
        a = torch.load(tmp_path / "whole" / name, weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "cut" / name, weights_only=True)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_resuming_past_a_teacher_that_is_gone_is_one_line(trained_run, tmp_path):
    data = str(trained_run / "data")
    with pytest.raises(Stop):
        train(data, str(tmp_path / "r"), arch="tiny", epochs=2, teacher_epochs=1,
              progress=False, log=stop_at("epoch 1:"))  # fmt: skip
    (tmp_path / "r" / "teacher.pt").write_bytes(b"not a torch file")
    code, out, err = run("--resume", str(tmp_path / "r"), "--quiet")
    assert code == 2 and "its teacher (teacher.pt) cannot be read" in err, err
    assert err.count("\n") == 1


def test_bfloat16_steps_are_another_arithmetic_than_float32_steps(trained_run, tmp_path):
    """--precision is not a label: the same run in bf16 takes other steps than in fp32 (the
    float32 weights it keeps end elsewhere), and says which it took."""
    data = str(trained_run / "data")
    states = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        metrics = train(
            data,
            str(out),
            arch="tiny",
            epochs=1,
            progress=False,
            log=lambda s: None,
            precision=precision,
        )
        assert metrics["precision"] == precision
        states[precision] = torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"]
        assert states[precision]["convs.0.weight"].dtype == torch.float32
    a, b = states["fp32"], states["bf16"]
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_epochs_before_the_last_score_a_stride_of_the_test_set_and_the_last_scores_all(
    trained_run, tmp_path, monkeypatch
):
    import host.train as train_module

    labels = torch.arange(3).repeat_interleave(6)  # stored label by label, as loaded
    pixels, some = train_module.epoch_test(labels * 10, labels, final=False)
    assert len(some) <= train_module.EPOCH_TEST and torch.equal(pixels, some * 10)
    monkeypatch.setattr(train_module, "EPOCH_TEST", 6)
    assert train_module.epoch_test(labels, labels, final=False)[1].tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(train_module.epoch_test(labels, labels, final=True)[1], labels)

    monkeypatch.setattr(train_module, "EPOCH_TEST", 4)
    lines = []
    metrics = train(
        str(trained_run / "data"),
        str(tmp_path / "run"),
        arch="tiny",
        epochs=2,
        progress=False,
        log=lines.append,
    )
    first, last = metrics["epochs"]
    assert first["test_images"] == 4 and last["test_images"] == 15  # 3 test images a label
    assert metrics["bn_settled"]["test_accuracy_before"] == last["test_accuracy"]
    assert any(line.startswith("epoch 1:") and "(4 images)" in line for line in lines)
    assert not any("images)" in line for line in lines if line.startswith("epoch 2:"))

    # what an epoch is scored on changes nothing in the model it trains
    monkeypatch.setattr(train_module, "EPOCH_TEST", 10**9)
    options = {"arch": "tiny", "epochs": 2, "progress": False, "log": lambda s: None}
    everything = train(str(trained_run / "data"), str(tmp_path / "all"), **options)
    assert everything["epochs"][0]["test_images"] == 15
    a = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "all" / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
