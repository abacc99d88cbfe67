"""Training a binary net: data -> model -> loop -> checkpoint.

Runs on one CPU or GPU, or under `torchrun --nproc_per_node=N` with DistributedDataParallel
(gloo on CPU, nccl on GPU); only rank 0 evaluates and writes. The run folder gets
checkpoint.pt, metrics.json (per-epoch loss, accuracy, saturation of every sign layer) and
curves.png.
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import uuid

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from edge.imaging.imagefolder import dataset_splits, relabel
from edge.imaging.preprocess import load_inputs
from host.allocator import keep_freed_memory
from host.config import TrainConfig, resolve
from host.models import BinaryNet, arch_spec
from host.pranc import PrancNet
from protocol.errors import BinsortError, bounded


def load_split(items: list, size: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """Images through the edge's own preprocessing: (N, size, size) uint8 and (N,) labels."""
    images = load_inputs([path for path, _ in items], size, size)
    labels = np.array([label for _, label in items], dtype=np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_sources(folders: list, size: int, labels: "list | None" = None) -> "tuple[list, list]":
    """(labels, [{"name", "train": (x, y), "test": (x, y)}]) for one or more data folders, all
    labelled in one order: `labels` when given (a model being fine-tuned: a folder with a label
    outside it is an error), else the first folder's, extended by any label the others add."""
    fixed = labels is not None
    labels = list(labels or [])
    sets = []
    for folder in folders:
        have, train_items, test_items = dataset_splits(folder)
        new = [lb for lb in have if lb not in labels]
        if new and fixed:
            raise BinsortError(
                "%s has label folders %s that the model does not know (its labels: %s): "
                "rename or remove them" % (folder, ", ".join(new), ", ".join(labels))
            )
        labels += new
        train = relabel(train_items, have, labels)
        test = relabel(test_items, have, labels)
        sets.append({"name": folder, "train": load_split(train, size)})
        sets[-1]["test"] = load_split(test, size)
    return labels, sets


def to_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) centred as (2p - 255) / 255, the model's input."""
    return pixels.float().mul_(2.0).sub_(255.0).div_(255.0).unsqueeze(1)


def _augmentation(pixels: torch.Tensor, gen: torch.Generator, shift: int):
    """One batch's random shift, contrast and brightness, drawn in that order: (each image's
    shifted grey levels, int64 (N, H*W); each image's table from grey level to augmented grey
    level, uint8 (N, 256)). A shift reads past the edge as the edge's own pixel (replicate
    padding)."""
    n, h, w = pixels.shape
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    contrast = torch.empty(n, 1).uniform_(0.75, 1.25, generator=gen)
    bright = torch.empty(n, 1).uniform_(-25, 25, generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :] - shift).clamp_(0, h - 1)
    cols = (dx[:, None] + torch.arange(w)[None, :] - shift).clamp_(0, w - 1)
    where = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, h * w)
    levels = torch.arange(256, dtype=torch.float32)[None, :]
    table = ((levels - 128) * contrast + 128 + bright).round().clamp(0, 255).to(torch.uint8)
    return torch.gather(pixels.reshape(n, h * w), 1, where).long(), table


def augment(pixels: torch.Tensor, gen: torch.Generator, shift: int = 4) -> torch.Tensor:
    """Random shift, contrast and brightness on uint8 images; the result is uint8 again so the
    model only ever sees pixels the camera could deliver."""
    shifted, table = _augmentation(pixels, gen, shift)
    return torch.gather(table, 1, shifted).view(pixels.shape)


def augmented_input(pixels: torch.Tensor, gen: torch.Generator, shift: int = 4) -> torch.Tensor:
    """to_input(augment(pixels, gen, shift)), the same numbers from the same draws, in two
    table look-ups a pixel: on 2 cores a third of the time of shifting, scaling and centring
    a batch of 64 bcnn144 frames arithmetically (tools/bench-train-step; training notes,
    section 5, twenty-third round)."""
    shifted, table = _augmentation(pixels, gen, shift)
    centred = to_input(table)[:, 0]
    return torch.gather(centred, 1, shifted).view(len(pixels), 1, *pixels.shape[1:])


@torch.no_grad()
def predictions(model, pixels, batch=64, keep=None) -> torch.Tensor:
    """The labels (argmax) a model gives uint8 (N, H, W) pixels in eval mode, `batch` at a time;
    `keep` evaluates a PRANC model's first `keep` chunks. Batches of 64, as training's: on 2
    cores `bcnn96h`'s 5,000 test images take 2.5 s in them against 3.4 s in batches of 512,
    which outgrow the caches, and the demo's 3,000 in one batch held gigabytes."""
    model.eval()
    device = next(model.parameters()).device
    extra = {} if keep is None else {"keep": keep}
    out = [torch.empty(0, dtype=torch.long)]
    for i in range(0, len(pixels), batch):
        x = to_input(pixels[i : i + batch]).to(device)
        logits = model(x.contiguous(memory_format=torch.channels_last), **extra)
        out.append(logits.argmax(1).cpu())
    return torch.cat(out)


def accuracy(model, pixels, labels, batch=64, keep=None) -> float:
    """Test accuracy in eval mode (predictions)."""
    correct = int((predictions(model, pixels, batch, keep) == labels).sum())
    return correct / max(len(labels), 1)


def prefix_sample(chunks: int, prob: float, gen: torch.Generator) -> int:
    """Chunks to keep this step: all of them, or with probability `prob` a uniform prefix."""
    if float(torch.rand((), generator=gen)) >= prob:
        return chunks
    return int(torch.randint(1, chunks, (), generator=gen))


@torch.no_grad()
def calibrate_bn(
    model, pixels, batch_size, device, gen, batches=40, order=None, augmented=False
) -> None:
    """Recompute every BatchNorm's running statistics on the whole model: the plain average
    over `batches` batches of `pixels` (taken in `order`, else shuffled), `augmented` as
    training's batches are. Batches of one image are skipped (no variance to measure)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    if order is None:
        order = torch.randperm(len(pixels), generator=gen)
    for i in range(0, min(len(order), batches * batch_size), batch_size):
        x = pixels[order[i : i + batch_size]]
        if len(x) < 2:
            continue
        x = augmented_input(x, gen) if augmented else to_input(x)
        model(x.to(device).contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum


# At the end of a run every BatchNorm's statistics are measured again, as a plain average over
# this many training batches (augmented as training's), not left as the running average of the
# last few dozen: its thresholds then depend less on which batches came last. On four
# bcnn144 runs on synth-7 sets it raised the test accuracy by 0.1 to 0.5 points (0.3 on
# average) and left the held-out renderers where they were, within their noise
# (docs/training-notes.md section 5, sixteenth round).
SETTLE_BATCHES = 100
# the test images an epoch before the last is scored on (the last epoch scores them all): on 2
# cores scoring 3,000 of bcnn144's took 2.3-3.9 s against an epoch's 16-19 s of steps, for a
# progress line that 1,000 draw to within about a point (training notes, section 5, twentieth)
EPOCH_TEST = 1000


def epoch_test(pixels, labels, final: bool):
    """The test set an epoch is scored on: all of it after the last epoch, else an even stride
    through it of at most EPOCH_TEST images (the sets are stored label by label, so a stride
    keeps every label's share)."""
    step = 1 if final else -(-len(labels) // EPOCH_TEST)
    return pixels[::step], labels[::step]


def settle_bn(model, data, config, device, rank, world, log, metrics) -> None:
    """Re-estimate the finished model's BatchNorm statistics (SETTLE_BATCHES) and score it
    again; `metrics` records both test accuracies."""
    gen = torch.Generator().manual_seed(config.seed + 1)
    order = data.epoch_order(gen, rank, world)
    calibrate_bn(model, data.train_x, config.batch_size, device, gen, SETTLE_BATCHES, order, True)
    if rank != 0:
        return
    before = metrics["test_accuracy"]
    metrics["test_accuracy"] = accuracy(model, data.test_x, data.test_y)
    metrics["bn_settled"] = {"batches": SETTLE_BATCHES, "test_accuracy_before": before}
    if len(data.sets) > 1:
        metrics["test_by_source"] = {s["name"]: accuracy(model, *s["test"]) for s in data.sets}
    log(
        "BatchNorm statistics measured again over %d training batches: test %.4f, was %.4f"
        % (SETTLE_BATCHES, metrics["test_accuracy"], before)
    )


def freeze_bn(model) -> None:
    """BatchNorm layers use (and keep) their running statistics; gamma and beta still learn."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def plot_curves(metrics: dict, path: str) -> None:
    """Loss, accuracy (on a fixed 0-1 axis, with the chance level) and saturation per epoch,
    under a title with the run's facts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = metrics["epochs"]
    epochs = [e["epoch"] for e in runs]
    classes = len(metrics.get("labels") or []) or None
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 4.0))
    a.plot(epochs, [e["loss"] for e in runs])
    a.set(title="training loss", xlabel="epoch")
    b.plot(epochs, [e["train_accuracy"] for e in runs], label="train")
    b.plot(epochs, [e["test_accuracy"] for e in runs], label="test")
    if classes:
        b.axhline(1 / classes, color="grey", linestyle=":", label="chance (1/%d)" % classes)
    b.set(title="accuracy", xlabel="epoch", ylim=(0, 1))
    b.grid(alpha=0.3)
    b.legend(loc="lower right")
    for name in runs[0]["saturation"]:
        c.plot(epochs, [e["saturation"][name] for e in runs], label=name)
    c.set(title="saturated fraction per sign layer", xlabel="epoch", ylim=(0, 1))
    c.legend(fontsize=6)
    facts = [metrics.get("arch", "?"), "%d epoch%s" % (len(runs), "s" * (len(runs) != 1))]
    if classes:
        facts.append("%d labels (%s)" % (classes, ", ".join(metrics["labels"])))
    if "test_accuracy" in metrics:
        facts.append("final test accuracy %.4f" % metrics["test_accuracy"])
    if "train_seconds" in metrics:
        facts.append("%.0f s training" % metrics["train_seconds"])
    if metrics.get("world_size", 1) > 1:
        facts.append("%d processes" % metrics["world_size"])
    fig.suptitle("binsort train: " + ", ".join(facts), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _distributed() -> "tuple[int, int]":
    """(rank, world size), initialising the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def train(
    data_dir,
    out_dir: str,
    config: "TrainConfig | None" = None,
    device: str = "auto",
    progress: bool = True,
    log=print,
    resume: "dict | None" = None,
    **options,
) -> dict:
    """Train on a data folder (or several); write the run folder; return metrics.

    `data_dir`: a folder, or a list of them: the first is the base set (usually synthetic),
    the others real images; with `real_weight` W, a share W of each epoch's samples is drawn
    from the others and 1 - W from the base (with replacement), however many images each has.
    `config`: the run (host.config.resolve); without one, `options` (arch, epochs, lr, init,
    param, pranc, ...) are resolved into one here. A run with `init` fine-tunes that checkpoint:
    its architecture and labels are kept, and with `frozen_bn` its BatchNorm statistics too
    (gamma and beta still learn).

    After every epoch the whole training state goes to OUT/resume.pt (model, optimiser,
    schedule, random generator, metrics so far), replaced atomically; `resume` (read_resume's
    dict) goes on from it, to the same result as a run that was never stopped. The finished
    run removes it.
    """
    keep_freed_memory()
    folders = [data_dir] if isinstance(data_dir, str) else list(data_dir)
    start = None
    if config is None:
        init = options.pop("init", None)
        start = load_checkpoint(init) if init else None
        config = resolve(
            init=init, init_ckpt=start[0] if start else None, mixed=len(folders) > 1, **options
        )
    elif config.init:
        start = load_checkpoint(config.init)
    rank, world = _distributed()
    if device == "auto":
        cuda = torch.cuda.is_available()
        device = ("cuda:%d" % (rank % torch.cuda.device_count())) if cuda else "cpu"
    labels = start[0]["labels"] if start else None
    if start and config.rename_labels:
        labels = renamed(labels, config.rename_labels)
    data = TrainingData(folders, config, labels)
    if resume is not None and resume["labels"] != data.labels:
        raise BinsortError(
            "the data of %s changed since it started (labels %s, now %s): start it afresh"
            % (out_dir, ", ".join(resume["labels"]), ", ".join(data.labels))
        )
    if rank == 0:
        data.describe(log)
    # channels-last: a third less time a step on a CPU (convolutions and pooling in oneDNN's
    # own layout), the same arithmetic
    model = build(config, len(data.labels), start, device).to(memory_format=torch.channels_last)
    if config.delta_budget is not None:
        from host.delta import check_budget, freeze_norm_ratios

        check_budget(start[0], load_checkpoint(config.init)[1], config.delta_budget)
        freeze_norm_ratios(model)
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)  # after every check: a refused run leaves nothing
    saving = {"path": os.path.join(out_dir, RESUME_FILE), "sources": folders}
    teacher, taught = None, None
    if config.teacher_epochs:
        teacher, taught, resume = _teacher_phase(
            model, data, config, device, rank, world, progress, log, out_dir, saving, resume
        )
    metrics = run_epochs(
        model,
        data,
        config,
        device,
        rank,
        world,
        progress,
        log,
        dict(saving, phase="student") if rank == 0 else None,
        resume,
        teacher,
    )
    if not config.init and config.param == "bnn":
        settle_bn(model, data, config, device, rank, world, log, metrics)
    if taught is not None and rank == 0:
        metrics["teacher"] = taught
        metrics["train_seconds"] = round(metrics["train_seconds"] + taught["train_seconds"], 1)
    if config.delta_budget is not None:
        metrics = _fit_budget(model, data, config, device, rank, world, progress, log, metrics)
    if rank == 0:
        save_run(out_dir, model, data, config, folders, metrics)
        with contextlib.suppress(FileNotFoundError):
            os.remove(saving["path"])  # the run is whole: nothing to resume
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


TEACHER_FILE = "teacher.pt"


def _teacher_phase(
    model, data, config, device, rank, world, progress, log, out_dir, saving, resume
):
    """The first phase of a run with `teacher_epochs`: the binary net's real-valued twin
    (BinaryNet.make_real) trains for that many epochs, then the binary net starts from its
    parameters and learns from its scores as well as the labels (run_epochs' distillation).
    The twin goes to OUT/teacher.pt; a run resumed past this phase reads it back.
    Returns (the twin, frozen; its metrics; the resume state left for the binary phase)."""
    path = os.path.join(out_dir, TEACHER_FILE)
    twin = build(config, len(data.labels), None, device).make_real()
    twin = twin.to(memory_format=torch.channels_last)
    if resume is not None and resume.get("phase", "student") == "student":
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            twin.load_state_dict(saved["state_dict"])
        except Exception as e:  # the phase's file is gone or damaged: its own error
            raise BinsortError(
                "--resume %s: its teacher (%s) cannot be read (%s): start the run afresh"
                % (out_dir, TEACHER_FILE, bounded(e))
            ) from None
        taught = saved["metrics"]
    else:
        phase = dataclasses.replace(config, epochs=config.teacher_epochs, binarize_ramp=0.0)
        log("teacher: the real-valued twin first, %d epochs" % phase.epochs)
        taught = run_epochs(
            twin,
            data,
            phase,
            device,
            rank,
            world,
            progress,
            lambda line: log("teacher " + line),
            dict(saving, phase="teacher", config=config) if rank == 0 else None,
            resume,
        )
        if rank == 0:
            keep = ("epochs", "test_accuracy", "train_seconds")
            taught = {k: taught[k] for k in keep}
            state = {"state_dict": {k: v.cpu() for k, v in twin.state_dict().items()}}
            tmp = path + ".tmp"
            torch.save(dict(state, metrics=taught), tmp)
            os.replace(tmp, path)
        model.load_state_dict(twin.state_dict())
        resume = None  # the binary phase starts afresh
        log("then the binary net from the twin's weights, learning from its scores")
    twin.eval()
    for w in twin.parameters():
        w.requires_grad_(False)
    return twin, taught, resume


def distil_loss(logits, teacher_logits, labels, config) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): (1 - a) of the cross-entropy with the labels
    plus a·T² of the KL divergence from the teacher's scores softened by the temperature T."""
    t, a = config.distil_temperature, config.distil_weight
    soft = F.kl_div(
        F.log_softmax(logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="batchmean"
    )
    return (1.0 - a) * F.cross_entropy(logits, labels) + a * t * t * soft


def renamed(labels: list, rename: dict) -> list:
    """The model's labels with each old name replaced by its new one, in the same order (the
    output that read the old code now reads the new); one-line errors for names that do not fit."""
    for old, new in rename.items():
        if old not in labels:
            raise BinsortError(
                "--rename-label %s=%s: the model has no label %s (its labels: %s)"
                % (old, new, old, ", ".join(labels))
            )
        if new in labels and new not in rename:
            raise BinsortError("--rename-label %s=%s: the model already has %s" % (old, new, new))
    out = [rename.get(label, label) for label in labels]
    if len(set(out)) != len(out):
        raise BinsortError("--rename-label gives two outputs one label: %s" % ", ".join(out))
    return out


def _fit_budget(model, data, config, device, rank, world, progress, log, metrics) -> dict:
    """A delta run's second phase (host.delta): keep the weight flips the budget allows, then
    train BatchNorm, the input conv and the output layer around them, binary weights frozen."""
    from host.delta import freeze_binary_weights, keep_within_budget

    ckpt, base = load_checkpoint(config.init)
    info = keep_within_budget(model, base.to(device), config.delta_budget, ckpt, log)
    freeze_binary_weights(model)
    second = dataclasses.replace(config, epochs=max(2, config.epochs // 3), binarize_ramp=0.0)
    log("delta: %d epochs of thresholds, input conv and output layer" % second.epochs)
    more = run_epochs(model, data, second, device, rank, world, progress, log)
    for w in model.parameters():
        w.requires_grad_(True)
    if rank != 0:
        return metrics
    done = len(metrics["epochs"])
    for row in more["epochs"]:
        metrics["epochs"].append(dict(row, epoch=done + row["epoch"], phase="delta"))
    metrics["test_accuracy"] = more["test_accuracy"]
    metrics["train_seconds"] = round(metrics["train_seconds"] + more["train_seconds"], 1)
    metrics["delta"] = info
    return metrics


class TrainingData:
    """The images of a run through the edge's preprocessing, and how an epoch samples them."""

    def __init__(self, folders: list, config: TrainConfig, labels=None):
        self.size = arch_spec(config.arch)["input"]
        self.labels, self.sets = load_sources(folders, self.size, labels)
        self.train_x = torch.cat([s["train"][0] for s in self.sets])
        self.train_y = torch.cat([s["train"][1] for s in self.sets])
        self.test_x = torch.cat([s["test"][0] for s in self.sets])
        self.test_y = torch.cat([s["test"][1] for s in self.sets])
        if not len(self.train_y) or not len(self.test_y):
            where = " + ".join(folders)
            raise BinsortError("%s needs images for both training and testing" % where)
        self.weights = None  # per-image sampling weights when real folders have a set share
        if len(self.sets) > 1 and config.real_weight is not None:
            n_base = len(self.sets[0]["train"][1])
            w = config.real_weight
            self.weights = torch.full((len(self.train_y),), w / (len(self.train_y) - n_base))
            self.weights[:n_base] = (1 - w) / n_base

    def describe(self, log) -> None:
        log(
            "data: %d train / %d test images, labels %s, input %dx%d"
            % (len(self.train_y), len(self.test_y), self.labels, self.size, self.size)
        )
        for s in self.sets[1:] if len(self.sets) > 1 else []:
            log("  %s: %d train / %d test" % (s["name"], len(s["train"][1]), len(s["test"][1])))

    def epoch_order(self, gen: torch.Generator, rank: int, world: int) -> torch.Tensor:
        """This rank's sample indices for one epoch."""
        n = len(self.train_y)
        if self.weights is None:
            return torch.randperm(n, generator=gen)[rank::world]
        return torch.multinomial(self.weights, n, True, generator=gen)[rank::world]


def build(config: TrainConfig, classes: int, start=None, device: str = "cpu"):
    """The model a run trains: the checkpoint's for fine-tuning, else a fresh BinaryNet or
    PrancNet, seeded by the run's seed."""
    torch.manual_seed(config.seed)
    if start:
        return start[1].to(device)
    if config.param == "pranc":
        p = config.pranc
        return PrancNet(
            config.arch,
            classes,
            p["alphas"],
            p["basis"],
            config.seed if p["seed"] is None else p["seed"],
            p["split"],
            p["chunks"],
            config.estimator,
            config.window,
            p["alpha_init"],
            p["ste_window"],
        ).to(device)
    return BinaryNet(config.arch, classes, config.estimator, config.window).to(device)


def native_bf16(device) -> bool:
    """Whether `device` computes bfloat16 in hardware: a CUDA GPU that says so, or a CPU with
    AVX512-BF16 or AMX (Linux's /proc/cpuinfo flags). Elsewhere bfloat16 is emulated, slower
    than float32."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def step_dtype(precision: str, device, param: str = "bnn") -> "torch.dtype | None":
    """What a training step's forward pass is autocast to (None: float32). The parameters, the
    optimiser and every evaluation stay float32. `auto` keeps PRANC runs in float32: their
    weights are sums over a basis that the edge rebuilds exactly, and a bfloat16 sum would flip
    the signs of the weights near zero that the packed model keeps."""
    if precision == "bf16" or (precision == "auto" and param == "bnn" and native_bf16(device)):
        return torch.bfloat16
    return None


def run_epochs(
    model,
    data: TrainingData,
    config: TrainConfig,
    device,
    rank,
    world,
    progress,
    log,
    saving=None,
    resume=None,
    teacher=None,
):
    """The training loop: Adam with a one-cycle cosine schedule, gradual binarisation over the
    first `binarize_ramp` of the steps; per-epoch metrics (rank 0 evaluates). `saving`
    ({"path", "sources", "phase"}): where each epoch's training state goes; `resume`: such a
    state to go on from; `teacher`: a net whose scores the loss also follows (distil_loss)."""
    pranc = config.pranc if config.param == "pranc" else None
    bnet = model.net if pranc else model
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=None if device == "cpu" else [device]
        )
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = math.ceil(len(data.train_y) / world / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=config.lr,
        total_steps=config.epochs * steps_per_epoch,
        pct_start=0.15,
        anneal_strategy="cos",
    )
    gen = torch.Generator().manual_seed(config.seed)
    dtype = step_dtype(config.precision, device, config.param)
    metrics = {"arch": config.arch, "labels": data.labels, "epochs": [], "world_size": world}
    metrics["precision"] = "bf16" if dtype is not None else "fp32"
    kind = torch.device(device).type
    started = time.time()
    step, ramp_steps = 0, config.binarize_ramp * config.epochs * steps_per_epoch
    signs = [m for _, m in bnet.sign_layers()]
    final_phase = config.epochs - round(pranc["final_frac"] * config.epochs) if pranc else None
    first = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["schedule"])
        gen.set_state(resume["generator"])
        step, metrics, first = resume["step"], resume["metrics"], resume["epoch"] + 1
        started = time.time() - resume["seconds"]
        if pranc:
            model.quantize = resume["quantize"]
        log("resuming at epoch %d of %d" % (first, config.epochs))
    for epoch in range(first, config.epochs + 1):
        model.train()
        if config.init and config.frozen_bn:
            freeze_bn(model)  # a few real images must not move what the base set measured
        if pranc and epoch > final_phase:
            if not model.quantize:
                log("final phase: BatchNorm statistics frozen, int16 alphas in the loop")
                calibrate_bn(model, data.train_x, config.batch_size, device, gen)
                model.quantize = True
            freeze_bn(model)
        order = data.epoch_order(gen, rank, world)
        bar = _progress(
            steps_per_epoch, "epoch %d/%d" % (epoch, config.epochs), progress and rank == 0
        )
        total_loss, total_correct, seen = 0.0, 0, 0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            mix = min(1.0, step / ramp_steps) if ramp_steps > 0 else 1.0
            for m in signs:
                m.mix = mix
            if pranc:
                model.mix = mix
            step += 1
            x = augmented_input(data.train_x[idx], gen).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            y = data.train_y[idx].to(device)
            with torch.autocast(kind, dtype=torch.bfloat16, enabled=dtype is not None):
                if pranc:
                    logits = net(x, keep=prefix_sample(model.chunks, pranc["prefix_prob"], gen))
                else:
                    logits = net(x)
                if teacher is not None:
                    with torch.no_grad():
                        taught = teacher(x).float()
            logits = logits.float()
            if teacher is not None:
                loss = distil_loss(logits, taught, y, config)
            else:
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item() * len(idx)
            total_correct += int((logits.argmax(1) == y).sum())
            seen += len(idx)
            if bar:
                bar.set_postfix(
                    loss="%.3f" % (total_loss / seen), acc="%.3f" % (total_correct / seen)
                )
                bar.update(1)
        if bar:
            bar.close()
        saturation = {name: round(m.take_saturation(), 4) for name, m in bnet.sign_layers()}
        if rank == 0:
            final = epoch == config.epochs
            test = epoch_test(data.test_x, data.test_y, final)
            row = {
                "epoch": epoch,
                "loss": total_loss / seen,
                "train_accuracy": total_correct / seen,
                "test_accuracy": accuracy(model, *test),
                "test_images": len(test[1]),
                "saturation": saturation,
                "binarized": mix,
                "seconds": round(time.time() - started, 1),
            }
            if pranc:
                quarter = max(1, model.chunks // 4)
                row["quarter_prefix_accuracy"] = accuracy(model, *test, keep=quarter)
            if len(data.sets) > 1:
                row["test_by_source"] = {
                    s["name"]: accuracy(model, *epoch_test(*s["test"], final)) for s in data.sets
                }
            metrics["epochs"].append(row)
            if saving is not None:
                _save_resume(
                    saving, model, opt, sched, gen, config, data, epoch, step, metrics, started
                )
            log(
                "epoch %d: loss %.4f train %.4f test %.4f%s max saturation %.2f (%s)"
                % (
                    epoch,
                    row["loss"],
                    row["train_accuracy"],
                    row["test_accuracy"],
                    "" if len(test[1]) == len(data.test_y) else " (%d images)" % len(test[1]),
                    max(saturation.values()),
                    max(saturation, key=saturation.get),
                )
            )
            for name, acc in row.get("test_by_source", {}).items():
                log("  test %.4f on %s" % (acc, name))
    if rank == 0:
        metrics["test_accuracy"] = metrics["epochs"][-1]["test_accuracy"]
        if len(data.sets) > 1:
            metrics["test_by_source"] = metrics["epochs"][-1]["test_by_source"]
        metrics["train_seconds"] = round(time.time() - started, 1)
    return metrics


RESUME_FILE = "resume.pt"


def _save_resume(saving, model, opt, sched, gen, config, data, epoch, step, metrics, started):
    """The training state after `epoch`, replacing the last one atomically."""
    state = {
        "format": "binsort-resume-1",
        "phase": saving.get("phase", "student"),
        "config": saving.get("config", config).as_dict(),  # the run's, not a phase's
        "sources": [os.path.abspath(f) for f in saving["sources"]],
        "labels": data.labels,
        "epoch": epoch,
        "step": step,
        "seconds": time.time() - started,
        "metrics": metrics,
        "quantize": getattr(model, "quantize", None),
        "model": {k: v.cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "schedule": sched.state_dict(),
        "generator": gen.get_state(),
    }
    tmp = saving["path"] + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, saving["path"])


def read_resume(run: str) -> dict:
    """The training state a stopped run left in RUN/resume.pt; one-line errors otherwise."""
    path = os.path.join(run, RESUME_FILE)
    if not os.path.isdir(run):
        raise BinsortError("--resume %s: no such run folder" % run)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(run, "checkpoint.pt")):
            raise BinsortError("--resume %s: that run finished; there is nothing to resume" % run)
        raise BinsortError(
            "--resume %s: no %s there (not a run binsort train started)" % (run, RESUME_FILE)
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise BinsortError("cannot read %s: %s" % (path, bounded(e))) from None
    if not isinstance(state, dict) or state.get("format") != "binsort-resume-1":
        raise BinsortError("%s is not a binsort training state" % path)
    return state


def save_run(out_dir: str, model, data: TrainingData, config: TrainConfig, folders, metrics):
    """checkpoint.pt (what build_model needs, the configuration and the metrics), metrics.json
    and curves.png."""
    os.makedirs(out_dir, exist_ok=True)
    pranc = None
    if config.param == "pranc":
        pranc = dict(config.pranc, seed=model.seed, ks=list(model.ks))
    checkpoint = {
        "format": "binsort-checkpoint-1",
        "arch": config.arch,
        "labels": data.labels,
        "input": data.size,
        "estimator": config.estimator,
        "window": config.window,
        "binarize_ramp": config.binarize_ramp,
        "param": config.param,
        "data": os.path.abspath(folders[0]),
        "sources": [os.path.abspath(f) for f in folders],
        "init": os.path.abspath(config.init) if config.init else None,
        "pranc": pranc,
        "config": config.as_dict(),
        "model_id": uuid.uuid4().hex[:12],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": {k: v for k, v in metrics.items() if k != "epochs"},
        "state_dict": {k: v.cpu().contiguous() for k, v in model.state_dict().items()},
    }
    torch.save(checkpoint, os.path.join(out_dir, "checkpoint.pt"))
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    plot_curves(metrics, os.path.join(out_dir, "curves.png"))


def _progress(total: int, desc: str, enabled: bool):
    """A progress bar on a terminal; none into a log or a pipe (the epoch lines say it all)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)


def build_model(ckpt: dict):
    """The untrained module a checkpoint's state dict belongs to."""
    classes = len(ckpt["labels"])
    if ckpt.get("param", "bnn") == "pranc":
        p = ckpt["pranc"]
        return PrancNet(
            ckpt["arch"],
            classes,
            sum(p["ks"]),
            p["basis"],
            p["seed"],
            p["ks"],
            p["chunks"],
            ckpt["estimator"],
            ckpt["window"],
        )
    return BinaryNet(ckpt["arch"], classes, ckpt["estimator"], ckpt["window"])


def load_checkpoint(path: str) -> "tuple[dict, BinaryNet]":
    """Read a checkpoint written by train(); clean errors for anything else."""
    from protocol.foreign import what_it_is

    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except FileNotFoundError:
        raise BinsortError("no such checkpoint: %s" % path) from None
    except OSError as e:
        raise BinsortError("cannot read checkpoint %s: %s" % (path, e.strerror or e)) from None
    if not head:
        raise BinsortError("checkpoint %s is empty (a copy that did not finish?)" % path)
    what = what_it_is(head)
    if what is not None and "PyTorch" not in what:
        raise BinsortError(
            "%s is not a training checkpoint but %s; give the RUN folder (or RUN/checkpoint.pt) "
            "that binsort train wrote" % (path, what)
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BinsortError("no such checkpoint: %s" % path) from None
    except Exception as e:  # torch raises many types for foreign or damaged files
        raise BinsortError("cannot read checkpoint %s: %s" % (path, bounded(e))) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "binsort-checkpoint-1":
        raise BinsortError("%s is not a binsort training checkpoint" % path)
    model = build_model(ckpt)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise BinsortError(
            "checkpoint %s does not match architecture %r: %s" % (path, ckpt["arch"], bounded(e))
        ) from None
    model.eval()
    return ckpt, model
