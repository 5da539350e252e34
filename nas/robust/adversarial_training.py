"""Adversarial training's settings and batches, shared by `nas retrain --adv-train` and
`nas search --adv-train` (Madry et al., arXiv 1706.06083: train on attacks of each batch
against the current weights).

Both commands carry the same four settings (`adv_train`, `adv_eps`, `adv_steps`,
`adv_step_size`) in their configs; `check_settings` validates them with the commands'
flag names and `training_attack` resolves their defaults on the dataset's pixel range.
`AdversarialBatches` replaces a normalised batch by its attack, with the random start
drawn from a generator seeded from (seed, epoch, stream, batch), so a resumed run makes
exactly the perturbations an uninterrupted one makes, with nothing in the checkpoint.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from nas.data.batches import derive_seed
from nas.robust.attacks import Attack, PixelModel, make_attack, to_normalised, to_pixels
from search_spaces.errors import InputError

#: PGD steps of adversarial training when --adv-steps is not given: Madry et al.'s
#: CIFAR-10 training attack (7 steps; evaluation uses more, `nas attack` 10)
ADV_TRAIN_PGD_STEPS = 7


#: the four settings, as argparse destinations and config keys alike
SETTINGS = ("adv_train", "adv_eps", "adv_steps", "adv_step_size")


def add_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """`--adv-train`, `--adv-eps`, `--adv-steps`, `--adv-step-size` for a command whose
    adversarial training does `what` (one wording of units and defaults for both)."""
    from nas.robust.attacks import attack_names

    p.add_argument("--adv-train", metavar="ATTACK",
                   help=f"adversarial training (Madry et al.): {what} "
                        f"({', '.join(attack_names())})")
    p.add_argument("--adv-eps", type=float, help="--adv-train's L-infinity budget in pixel "
                   "units (default 8/255 of the pixel range's width: 8/255 on [0, 1])")
    p.add_argument("--adv-steps", type=int, help=f"--adv-train's PGD steps (default "
                   f"{ADV_TRAIN_PGD_STEPS}; fgsm takes one)")
    p.add_argument("--adv-step-size", type=float, help="--adv-train's PGD step in pixel "
                   "units (default 2.5 * eps / steps)")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The four settings as config overrides (None where a flag was not given)."""
    return {name: getattr(args, name) for name in SETTINGS}


class AdversarialSettings(Protocol):
    """What a retrain or search config says about adversarial training."""

    @property
    def adv_train(self) -> str | None: ...
    @property
    def adv_eps(self) -> float | None: ...
    @property
    def adv_steps(self) -> int | None: ...
    @property
    def adv_step_size(self) -> float | None: ...


def check_settings(cfg: AdversarialSettings) -> None:
    """An attack the registry knows, settings it accepts (checked on a [0, 1] range; the
    real range only scales the defaults), and no --adv-* setting without --adv-train,
    which would otherwise be silently ignored."""
    if cfg.adv_train is None:
        given = [f"--{name.replace('_', '-')}" for name in SETTINGS[1:]
                 if getattr(cfg, name) is not None]
        if given:
            raise InputError(f"{', '.join(given)} without --adv-train has no effect; add "
                             "--adv-train pgd (or fgsm)")
        return
    make_attack(cfg.adv_train, cfg.adv_eps, cfg.adv_steps, cfg.adv_step_size,
                default_steps=ADV_TRAIN_PGD_STEPS, flag="--adv-")


def training_attack(cfg: AdversarialSettings, pixel_range: tuple[float, float],
                    eval_mode: bool = True) -> Attack | None:
    """The attack adversarial training makes its batches with (None: clean training);
    unset eps / steps / step size get their defaults on the dataset's pixel range."""
    if cfg.adv_train is None:
        return None
    return make_attack(cfg.adv_train, cfg.adv_eps, cfg.adv_steps, cfg.adv_step_size,
                       pixel_range=pixel_range, default_steps=ADV_TRAIN_PGD_STEPS,
                       flag="--adv-", eval_mode=eval_mode)


class AdversarialBatches:
    """Normalised batch in, its attack (normalised) out, against `net` as it is now."""

    def __init__(self, attack: Attack, net: nn.Module, mean: Sequence[float],
                 std: Sequence[float], seed: int, channels_last: bool = False) -> None:
        self.attack, self.seed = attack, seed
        self.mean, self.std = tuple(mean), tuple(std)
        self.pixel_net = PixelModel(net, mean, std, channels_last)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int, stream: int,
                 batch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, stream, batch))
        pixels = self.attack(self.pixel_net, to_pixels(x, self.mean, self.std), y, gen)
        return to_normalised(pixels, self.mean, self.std)


#: (normalised batch, labels, batch index) -> its adversarial version
Perturb = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


__all__ = ["ADV_TRAIN_PGD_STEPS", "SETTINGS", "AdversarialBatches", "AdversarialSettings",
           "Perturb", "add_arguments", "check_settings", "settings_from_args",
           "training_attack"]
