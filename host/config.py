"""One training configuration: every default of a training run, written once and resolved once.

`resolve` starts from the defaults of the parameterisation (BNN, or PRANC's), takes the number
of epochs from the architecture (host/models.py), applies the fine-tuning defaults when the run
starts from a checkpoint, and last what the user gave (None means "the default"). The result,
a `TrainConfig`, is what `host.train.train` runs, what builds the model, and what the checkpoint
records.
"""

import dataclasses

from host.archs import DEFAULT_ARCH, arch_spec
from protocol.errors import BinsortError

# a binary net trained from scratch (docs/training-notes.md sections 1-2 measured these)
BNN = {
    "lr": 1e-2,  # peak of the one-cycle schedule
    "batch_size": 64,
    "estimator": "approx",
    "window": 1.0,
    "binarize_ramp": 0.25,  # activations go from clamp to sign over the first quarter
    # distillation from the real-valued twin (an architecture's "teacher_epochs" turn it on):
    # the binary net's loss is 0.3 cross-entropy + 0.7 T^2 KL of the twin's scores at T = 2
    "distil_temperature": 2.0,
    "distil_weight": 0.7,
    # arithmetic of the training steps: "bf16" autocasts the forward pass to bfloat16 (the
    # parameters and the optimiser stay float32), "fp32" does not, "auto" takes bf16 where the
    # device computes it natively (section 5, ninth round, of docs/training-notes.md)
    "precision": "auto",
}
PRECISIONS = ("auto", "bf16", "fp32")
# fine-tuning a trained model (--init): a few epochs at a lower rate, already binary
FINE_TUNE = {"epochs": 12, "lr": 1e-3, "binarize_ramp": 0.0, "real_weight": 0.5}
# PRANC (host.pranc): per-layer alphas of a hash-drawn basis, not the weights themselves
PRANC = {
    "alphas": 4096,  # int16 coefficients in all: 8 KiB
    "basis": "fastfood",
    "split": "sqrt",  # "size" gives bcnn's input layer 4 alphas and its output layer 7
    "epochs": 20,
    "binarize_ramp": 0.6,  # weights and activations go from clamp to sign over 60% of training
    "chunks": 16,
    "seed": None,  # the basis seed; None uses the training seed
    "final_frac": 0.25,  # last fraction of epochs: frozen BatchNorm statistics, int16 alphas
    "prefix_prob": 0.5,  # probability that a step trains a random prefix, not the whole model
    "alpha_init": 1.0,  # initial weights spread like a kaiming init times this
    "ste_window": 0.5,  # binary weights' gradient only within 0.5 std of zero (None: all)
}
PARAMS = ("bnn", "pranc")


@dataclasses.dataclass
class TrainConfig:
    arch: str
    epochs: int
    lr: float
    batch_size: int
    estimator: str
    window: float
    binarize_ramp: float
    seed: int = 0
    param: str = "bnn"
    pranc: "dict | None" = None  # PRANC's options, complete, when param == "pranc"
    init: "str | None" = None  # the checkpoint a fine-tuning run starts from
    real_weight: "float | None" = None  # share of each epoch from the real folders
    frozen_bn: bool = True  # fine-tuning keeps the base model's BatchNorm statistics
    delta_budget: "int | None" = None  # bytes a .bsd delta of the base model may take (host.delta)
    # fine-tuning: {old label: new label}, a new box code taking an old one's output
    rename_labels: "dict | None" = None
    # epochs of the real-valued twin that starts and teaches the binary net (host.train), 0: none
    teacher_epochs: int = 0
    distil_temperature: float = BNN["distil_temperature"]
    distil_weight: float = BNN["distil_weight"]
    precision: str = BNN["precision"]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve(
    arch=None,
    param="bnn",
    init=None,
    init_ckpt=None,
    mixed=False,
    demo=False,
    pranc=None,
    **given,
) -> TrainConfig:
    """The configuration of one run. `init` is the checkpoint path of a fine-tuning run and
    `init_ckpt` that checkpoint's dict (its architecture, estimator and window are kept);
    `mixed` says the data has real folders after the base; `demo` takes the architecture's
    demo epochs; `pranc` holds PRANC options that differ from PRANC's defaults; `given` holds
    TrainConfig fields, None meaning the default."""
    if param not in PARAMS:
        raise BinsortError("unknown parameterisation %r (choose bnn or pranc)" % param)
    unknown = set(given) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TypeError("not training options: %s" % ", ".join(sorted(unknown)))
    values = dict(BNN)
    if init_ckpt is not None:
        if init_ckpt.get("param", "bnn") != "bnn" or param != "bnn":
            raise BinsortError("--init fine-tunes a bnn run; %s was trained as pranc" % init)
        if arch is not None and arch != init_ckpt["arch"]:
            raise BinsortError(
                "--init %s is a %s model, not %s: leave --arch out, or train a new model"
                % (init, init_ckpt["arch"], arch)
            )
        arch = init_ckpt["arch"]
    arch = arch or DEFAULT_ARCH
    spec = arch_spec(arch)
    values["epochs"] = spec.get("demo_epochs", spec["epochs"]) if demo else spec["epochs"]
    values["teacher_epochs"] = spec.get("teacher_epochs", 0)
    options = None
    if param == "pranc":
        options = dict(PRANC, **(pranc or {}))
        values.update(
            epochs=PRANC["epochs"], binarize_ramp=PRANC["binarize_ramp"], teacher_epochs=0
        )
    if init_ckpt is not None:
        values.update(
            epochs=FINE_TUNE["epochs"],
            lr=FINE_TUNE["lr"],
            binarize_ramp=FINE_TUNE["binarize_ramp"],
            estimator=init_ckpt["estimator"],
            window=init_ckpt["window"],
            teacher_epochs=0,
        )
        if mixed:
            values["real_weight"] = FINE_TUNE["real_weight"]
    values.update({k: v for k, v in given.items() if v is not None})
    cfg = TrainConfig(arch=arch, param=param, pranc=options, init=init, **values)
    check(cfg)
    return cfg


def check(cfg: TrainConfig) -> None:
    """One-line errors for values no run can use."""
    if cfg.epochs < 1:
        raise BinsortError("--epochs must be at least 1: %d" % cfg.epochs)
    if cfg.batch_size < 1:
        raise BinsortError("--batch-size must be at least 1: %d" % cfg.batch_size)
    if not 0 < cfg.lr < float("inf"):  # inf trained on, a NaN model in the end
        raise BinsortError("--lr must be a positive number: %g" % cfg.lr)
    if not 0 <= cfg.binarize_ramp <= 1:
        raise BinsortError("--binarize-ramp must be between 0 and 1: %g" % cfg.binarize_ramp)
    if cfg.precision not in PRECISIONS:
        raise BinsortError(
            "unknown --precision %r (choose %s)" % (cfg.precision, ", ".join(PRECISIONS))
        )
    if cfg.teacher_epochs < 0:
        raise BinsortError("--teacher-epochs must be 0 or more: %d" % cfg.teacher_epochs)
    if cfg.teacher_epochs and (cfg.init or cfg.param != "bnn"):
        raise BinsortError(
            "--teacher-epochs starts a new binary net from its real-valued twin; "
            "not with --init or --param pranc"
        )
    if not cfg.distil_temperature > 0 or not 0 <= cfg.distil_weight <= 1:
        raise BinsortError("distillation needs a positive temperature and a weight in [0, 1]")
    if cfg.rename_labels and cfg.init is None:
        raise BinsortError("--rename-label needs --init RUN: it renames that model's outputs")
    if cfg.delta_budget is not None and (cfg.init is None or cfg.delta_budget < 1):
        raise BinsortError("--delta-budget needs --init RUN (the model the device runs) and bytes")
    if cfg.real_weight is not None and not 0 < cfg.real_weight < 1:
        raise BinsortError("the real-image weight must be between 0 and 1: %g" % cfg.real_weight)
