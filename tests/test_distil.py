"""Distillation from the real-valued twin (host.train's teacher phase): the twin, the loss,
and that the binary net starts from the twin it learns from."""

import torch
import torch.nn.functional as F

from host.config import resolve
from host.models import BinaryNet
from host.train import TrainingData, _teacher_phase, build, distil_loss


def test_the_twin_has_the_same_parameters_and_computes_in_reals():
    torch.manual_seed(0)
    net = BinaryNet("tiny", 5)
    twin = BinaryNet("tiny", 5)
    twin.load_state_dict(net.state_dict())
    twin.make_real()
    assert twin.state_dict().keys() == net.state_dict().keys()
    net.eval(), twin.eval()
    x = torch.randn(4, 1, 32, 32)
    # the binary net's sign layers see only signs; the twin's see magnitudes
    layer_in = torch.randn(2, 32, 8, 8)
    sign, real_sign = net.convs[0].sign, twin.convs[0].sign
    assert set(sign(layer_in).unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(real_sign(layer_in), layer_in.clamp(-1, 1))
    w = twin.convs[0].weight
    assert torch.equal(twin.convs[0].weight_fn(w), w)
    assert not torch.allclose(net(x), twin(x))


def test_the_distillation_loss_weighs_labels_against_the_teachers_scores():
    logits = torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    cfg = resolve(arch="tiny")
    assert (cfg.distil_temperature, cfg.distil_weight) == (2.0, 0.7)
    only_labels = resolve(arch="tiny", distil_weight=0.0)
    assert torch.allclose(distil_loss(logits, logits * 3, labels, only_labels),
                          F.cross_entropy(logits, labels))  # fmt: skip
    only_teacher = resolve(arch="tiny", distil_weight=1.0)
    assert float(distil_loss(logits, logits, labels, only_teacher)) < 1e-6  # agrees: no loss
    assert float(distil_loss(logits, -logits, labels, only_teacher)) > 0.1


def test_the_binary_net_starts_from_its_trained_twin_which_is_frozen(trained_run, tmp_path):
    data_dir = str(trained_run / "data")
    config = resolve(arch="tiny", epochs=1, teacher_epochs=2)
    data = TrainingData([data_dir], config)
    model = build(config, len(data.labels))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    saving = {"path": str(tmp_path / "resume.pt"), "sources": [data_dir]}
    twin, taught, resume = _teacher_phase(
        model, data, config, "cpu", 0, 1, False, lambda s: None, str(tmp_path), saving, None
    )
    assert resume is None and [e["epoch"] for e in taught["epochs"]] == [1, 2]
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in twin.state_dict().items())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the twin did train
    assert not any(p.requires_grad for p in twin.parameters()) and not twin.training
    saved = torch.load(tmp_path / "teacher.pt", weights_only=True)
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in twin.state_dict().items())


def test_train_refuses_a_teacher_where_none_fits_in_one_line(trained_run, tmp_path):
    import subprocess
    import sys

    data = str(trained_run / "data")
    run = str(trained_run / "run")
    for extra, message in [
        (["--teacher-epochs", "-1"], "--teacher-epochs must be 0 or more"),
        (["--teacher-epochs", "2", "--init", run], "not with --init"),
        (["--teacher-epochs", "2", "--param", "pranc"], "not with --init or --param pranc"),
    ]:
        bad = subprocess.run(
            [sys.executable, "-m", "host.cli", "train", "--data", data, "--arch", "tiny",
             "--out", str(tmp_path / "x"), *extra],
            capture_output=True, text=True,
        )  # fmt: skip
        assert bad.returncode == 2 and message in bad.stderr, (extra, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
