"""A finished run measures its BatchNorm statistics again over many training batches, instead of
keeping the running average of the last few (host.train.settle_bn); fine-tuning keeps them."""

import math

import torch

from host.config import resolve
from host.models import BinaryNet
from host.train import (
    SETTLE_BATCHES,
    TrainingData,
    calibrate_bn,
    load_checkpoint,
    to_input,
    train,
)


def test_calibration_is_the_plain_average_over_its_batches_and_forgets_what_was_there():
    torch.manual_seed(0)
    net = BinaryNet("tiny", 5).to(memory_format=torch.channels_last)
    pixels = torch.randint(0, 256, (96, 32, 32), dtype=torch.uint8)
    bn = net.convs[0].bn
    bn.running_mean.fill_(1e3)  # statistics that have nothing to do with these images
    bn.running_var.fill_(1e3)
    bn.num_batches_tracked.fill_(50)  # as after training
    bn.momentum = 0.1
    order = torch.arange(96)
    calibrate_bn(net, pixels, 32, "cpu", torch.Generator(), batches=3, order=order)
    with torch.no_grad():
        stem = net.stem(to_input(pixels))  # what the first binary conv's BatchNorm reads
    # three equal batches: the average of their means is the mean over all 96 images
    assert torch.allclose(bn.running_mean, stem.mean((0, 2, 3)), atol=1e-5)
    per_batch = [stem[i : i + 32].var((0, 2, 3)) for i in (0, 32, 64)]  # unbiased, as BN's
    assert torch.allclose(bn.running_var, sum(per_batch) / 3, rtol=1e-4)
    assert int(bn.num_batches_tracked) == 3
    assert bn.momentum == 0.1  # training would go on with its own momentum


def test_a_finished_run_measures_its_statistics_again_and_a_fine_tune_keeps_them(
    trained_run, tmp_path
):
    data = str(trained_run / "data")
    lines = []
    metrics = train(
        data,
        str(tmp_path / "run"),
        arch="tiny",
        epochs=2,
        batch_size=8,
        progress=False,
        log=lines.append,
    )
    settled = metrics["bn_settled"]
    assert settled["batches"] == SETTLE_BATCHES
    assert 0 <= settled["test_accuracy_before"] <= 1
    assert any(line.startswith("BatchNorm statistics measured again") for line in lines)
    ckpt, net = load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    # reset and counted again over one epoch's batches (fewer than SETTLE_BATCHES here), not
    # the two epochs' steps that training's running average counted
    images = len(TrainingData([data], resolve(arch="tiny"), ckpt["labels"]).train_y)
    steps = math.ceil(images / 8)
    assert steps < 2 * steps <= SETTLE_BATCHES
    tracked = {int(m.num_batches_tracked) for m in _bns(net)}
    assert tracked == {steps}

    tuned = train(
        data,
        str(tmp_path / "tuned"),
        init=str(tmp_path / "run" / "checkpoint.pt"),
        epochs=1,
        progress=False,
        log=lambda s: None,
    )
    assert "bn_settled" not in tuned
    _, tuned_net = load_checkpoint(str(tmp_path / "tuned" / "checkpoint.pt"))
    for a, b in zip(_bns(net), _bns(tuned_net), strict=True):
        assert torch.equal(a.running_mean, b.running_mean)


def _bns(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
