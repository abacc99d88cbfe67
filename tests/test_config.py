"""The training configuration is resolved once, in one order: the parameterisation's defaults,
the architecture's epochs, fine-tuning, then what the user gave."""

import pytest

from host.archs import ARCHS, DEFAULT_ARCH
from host.config import BNN, FINE_TUNE, PRANC, resolve
from protocol.errors import BinsortError

CKPT = {"arch": "tiny", "param": "bnn", "estimator": "ste", "window": 0.5}


def test_a_fresh_run_takes_the_architectures_epochs_and_the_bnn_defaults():
    cfg = resolve()
    assert cfg.arch == DEFAULT_ARCH and cfg.epochs == ARCHS[DEFAULT_ARCH]["epochs"]
    assert (cfg.lr, cfg.batch_size, cfg.binarize_ramp) == (
        BNN["lr"],
        BNN["batch_size"],
        BNN["binarize_ramp"],
    )
    assert cfg.pranc is None and cfg.init is None and cfg.real_weight is None
    demo = resolve(demo=True)
    assert demo.epochs == ARCHS[DEFAULT_ARCH]["demo_epochs"]
    assert resolve(arch="tiny", demo=True).epochs == ARCHS["tiny"]["epochs"]


def test_what_the_user_gives_wins_and_none_means_the_default():
    cfg = resolve(arch="bcnn", epochs=3, lr=None, batch_size=32)
    assert (cfg.arch, cfg.epochs, cfg.lr, cfg.batch_size) == ("bcnn", 3, BNN["lr"], 32)


def test_pranc_has_its_own_epochs_ramp_and_complete_options():
    cfg = resolve(param="pranc", pranc={"alphas": 100})
    assert cfg.epochs == PRANC["epochs"] and cfg.binarize_ramp == PRANC["binarize_ramp"]
    assert cfg.pranc["alphas"] == 100 and cfg.pranc["basis"] == PRANC["basis"]


def test_fine_tuning_keeps_the_checkpoints_arch_and_estimator_and_its_own_defaults():
    cfg = resolve(init="run/checkpoint.pt", init_ckpt=CKPT, mixed=True)
    assert (cfg.arch, cfg.estimator, cfg.window) == ("tiny", "ste", 0.5)
    assert (cfg.epochs, cfg.lr, cfg.binarize_ramp, cfg.real_weight) == (
        FINE_TUNE["epochs"],
        FINE_TUNE["lr"],
        FINE_TUNE["binarize_ramp"],
        FINE_TUNE["real_weight"],
    )
    assert resolve(init="r", init_ckpt=CKPT).real_weight is None  # no real folders
    assert resolve(init="r", init_ckpt=CKPT, epochs=2, lr=0.5).lr == 0.5
    with pytest.raises(BinsortError, match="is a tiny model, not bcnn"):
        resolve(arch="bcnn", init="r", init_ckpt=CKPT)
    with pytest.raises(BinsortError, match="trained as pranc"):
        resolve(init="r", init_ckpt=dict(CKPT, param="pranc"))


@pytest.mark.parametrize(
    "given, message",
    [
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"lr": -1.0}, "--lr must be a positive number"),
        ({"lr": float("inf")}, "--lr must be a positive number"),
        ({"lr": float("nan")}, "--lr must be a positive number"),
        ({"binarize_ramp": 2.0}, "--binarize-ramp must be between 0 and 1"),
        ({"real_weight": 1.0}, "real-image weight must be between 0 and 1"),
        ({"arch": "nope"}, "unknown architecture"),
        ({"param": "gf3"}, "unknown parameterisation"),
        ({"precision": "fp16"}, "unknown --precision 'fp16'"),
    ],
)
def test_values_no_run_can_use_are_one_line_errors(given, message):
    with pytest.raises(BinsortError, match=message):
        resolve(**given)


def test_a_misspelt_option_is_a_programming_error():
    with pytest.raises(TypeError, match="epoch"):
        resolve(epoch=3)


def test_the_teacher_phase_is_off_unless_asked_and_never_for_fine_tuning_or_pranc(monkeypatch):
    assert resolve().teacher_epochs == 0 and resolve(demo=True).teacher_epochs == 0
    assert resolve(arch="tiny", teacher_epochs=3).teacher_epochs == 3
    monkeypatch.setitem(ARCHS["tiny"], "teacher_epochs", 4)  # an architecture may default it
    assert resolve(arch="tiny").teacher_epochs == 4
    assert resolve(init="r", init_ckpt=CKPT).teacher_epochs == 0
    assert resolve(arch="tiny", param="pranc").teacher_epochs == 0
    with pytest.raises(BinsortError, match="not with --init"):
        resolve(init="r", init_ckpt=CKPT, teacher_epochs=2)


def test_precision_auto_takes_bfloat16_only_where_the_device_has_it(monkeypatch):
    import torch

    from host import train

    assert resolve().precision == "auto"
    assert train.step_dtype("fp32", "cpu") is None
    assert train.step_dtype("bf16", "cpu") is torch.bfloat16
    monkeypatch.setattr(train, "native_bf16", lambda device: True)
    assert train.step_dtype("auto", "cpu") is torch.bfloat16
    assert train.step_dtype("auto", "cpu", "pranc") is None  # its weights are exact sums
    assert train.step_dtype("bf16", "cpu", "pranc") is torch.bfloat16  # unless asked
    monkeypatch.setattr(train, "native_bf16", lambda device: False)
    assert train.step_dtype("auto", "cpu") is None


def test_native_bfloat16_is_read_from_the_cpus_flags(monkeypatch, tmp_path):
    import builtins

    from host import train

    real_open = builtins.open

    def cpuinfo(flags):
        def fake(path, *a, **k):
            if path == "/proc/cpuinfo":
                path = tmp_path / "cpuinfo"
                path.write_text("processor\t: 0\nflags\t\t: %s\n" % flags)
            return real_open(path, *a, **k)

        return fake

    monkeypatch.setattr(builtins, "open", cpuinfo("fpu sse avx2 avx512f avx512_bf16"))
    assert train.native_bf16("cpu")
    monkeypatch.setattr(builtins, "open", cpuinfo("fpu sse avx2 avx512f avx512bw"))
    assert not train.native_bf16("cpu")
