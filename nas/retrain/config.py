"""Retraining configuration: each space's published evaluation recipe, and small presets.

DARTS cells: `paper` is DARTS `train.py` (docs/methods.md#darts): 20 cells, 36 channels, 600 epochs,
batch 96, SGD lr 0.025 with a cosine schedule to 0, momentum 0.9, weight decay 3e-4,
gradient clipping 5, auxiliary head weight 0.4, cutout 16, drop-path 0.2 rising linearly.
`small` keeps every ingredient and scales the sizes to the embedded 8x8 digits so that a
retrain finishes in about a minute on a 2-core CPU; its network (8 cells, 16 channels) is
the deployed network of the `cpu` hardware profile, so the latency measured after a
retrain is the latency the `cpu` predictor learned.

NB201 cells: `paper` is the benchmark's own training (NAS-Bench-201, arXiv 2001.00326):
its network (16 channels, 5 cells per stage, no auxiliary head, no drop-path), 200
epochs, batch 256, SGD with Nesterov momentum 0.9, lr 0.1 with a cosine schedule to 0,
weight decay 5e-4, no gradient clipping, no cutout. `small` keeps that recipe and that
network (so the measured latency is the one the NB201 profiles refer to) and only
shortens it to 30 epochs at batch 96, enough steps on the 1,437 digits images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from nas.config_dict import ConfigDict
from search_spaces.errors import InputError


@dataclass(frozen=True)
class RetrainConfig(ConfigDict):
    KIND = "retrain"

    space: str = "darts"  # a registered space: set from the genotype being trained
    dataset: str = "digits"
    data_dir: str | None = None
    hardware: str | None = None
    predictor: str | None = None  # latency predictor directory (default: the profile's)
    seed: int = 0
    preset: str = "paper"
    # network
    init_channels: int = 36
    layers: int = 20
    auxiliary_weight: float = 0.4
    # optimisation
    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 3e-4
    grad_clip: float = 5.0  # 0: no clipping
    # regularisation
    cutout: int = 16
    drop_path: float = 0.2
    # adversarial training (Madry et al.): train on attacks of each batch (nas.robust);
    # eps and step size in pixel units, None until the dataset's pixel range resolves them
    adv_train: str | None = None  # an attack name ("pgd", "fgsm"); None: clean training
    adv_eps: float | None = None  # default: 8/255 of the pixel range's width
    adv_steps: int | None = None  # default: 7 for pgd (Madry's CIFAR training), 1 for fgsm
    adv_step_size: float | None = None  # default: 2.5 * eps / steps
    # model selection: hold out this many training images as a validation split, scored
    # after training (val_acc), so a sweep can choose on data that is not the test split
    holdout: int = 0
    # bookkeeping
    data_limit: int | None = None

    @property
    def auxiliary(self) -> bool:
        return self.auxiliary_weight > 0


PAPER = RetrainConfig(preset="paper")
#: the DARTS recipes; a space changes what it trains differently (`retrain_overrides`)
PRESETS: dict[str, RetrainConfig] = {
    "paper": PAPER,
    "small": replace(
        PAPER, preset="small", init_channels=16, layers=8, epochs=30, cutout=2, drop_path=0.1
    ),
}
PRESET_NAMES: tuple[str, ...] = tuple(sorted(PRESETS))


def preset_config(name: str, space: str = "darts") -> RetrainConfig:
    """The recipe `name` for cells of `space` (each space trains its cells its own way)."""
    from search_spaces.space import get_space

    if name not in PRESETS:
        raise InputError(f"unknown retrain preset {name!r} for {space} cells; "
                         f"known: {', '.join(PRESET_NAMES)}")
    return replace(PRESETS[name], space=space, **get_space(space).retrain_overrides(name))


def validate_config(cfg: RetrainConfig) -> None:
    """Reject impossible settings with one-line errors before anything is written."""
    from search_spaces.space import get_space

    space = get_space(cfg.space)
    layers_error = space.layers_error(cfg.layers)
    checks = [
        (cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}"),
        (layers_error is None, layers_error or ""),
        (cfg.init_channels >= 2 and cfg.init_channels % 2 == 0,
         f"--channels must be an even number >= 2, got {cfg.init_channels}"),
        (cfg.batch_size >= 2, f"--batch-size must be at least 2, got {cfg.batch_size}"),
        (cfg.lr > 0, f"--lr must be positive, got {cfg.lr}"),
        (0.0 <= cfg.drop_path < 1.0, f"--drop-path must be in [0, 1), got {cfg.drop_path}"),
        (cfg.cutout >= 0, f"--cutout must be >= 0, got {cfg.cutout}"),
        (cfg.grad_clip >= 0, f"gradient clipping must be >= 0, got {cfg.grad_clip}"),
        (space.supports_drop_path or cfg.drop_path == 0,
         f"{space.name} networks have no drop-path; drop --drop-path"),
        (space.supports_auxiliary or cfg.auxiliary_weight == 0,
         f"{space.name} networks have no auxiliary head"),
        (cfg.auxiliary_weight >= 0, f"auxiliary weight must be >= 0, got {cfg.auxiliary_weight}"),
        (cfg.holdout >= 0, f"--holdout must be >= 0, got {cfg.holdout}"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)
    from nas.robust.adversarial_training import check_settings

    check_settings(cfg)
