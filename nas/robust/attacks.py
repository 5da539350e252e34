"""L-infinity adversarial attacks (FGSM, PGD) in pixel space, and robust accuracy.

Datasets are stored normalised (`nas.data.spec`), but a perturbation budget only means
something in the units of the image itself: "8/255" is eight grey levels of an 8-bit
pixel, and a valid image has every pixel inside the dataset's `pixel_range`. So the
attacks work on pixel images and the normalisation moves inside the model
(`PixelModel`); the ball and the range are then plain per-pixel bounds, the same for
every channel, whatever that channel's mean and std.

Units: `eps` and `step_size` are in pixel units. CIFAR-10 and the embedded digits both
have pixels in [0, 1], so the usual CIFAR budget 8/255 is `eps=8/255`; a dataset whose
pixels spanned [0, 255] would need `eps=8`. `make_attack` fills in defaults scaled by
the range's width (`DEFAULT_EPS_FRACTION`), so the default is 8 grey levels on any range.

Mode: an attack runs the network in eval mode (`eval_mode=True`, the default) and puts
every module back in the mode it found it in; evaluation wants the deterministic
deployed network, and adversarial training (`nas.retrain.trainer`) chooses the same.
Gradients are taken with respect to the input only, so an attack never leaves anything
in the parameters' `.grad`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nas.training import to_layout
from search_spaces.errors import InputError

__all__ = [
    "ATTACKS",
    "DEFAULT_EPS_FRACTION",
    "Attack",
    "PixelModel",
    "RobustAccuracy",
    "attack_names",
    "fgsm",
    "make_attack",
    "pgd",
    "robust_accuracy",
    "to_normalised",
    "to_pixels",
]

#: default budget as a fraction of the pixel range's width: 8 grey levels of 255, the
#: standard CIFAR-10 L-infinity budget (Madry et al., arXiv 1706.06083)
DEFAULT_EPS_FRACTION = 8 / 255
#: default step size is this times eps / steps (Madry et al.: enough for the iterates to
#: reach the ball's faces from anywhere in it, with room to move along them)
STEP_SIZE_FACTOR = 2.5

PixelRange = tuple[float, float]


# ------------------------------------------------------------------ pixel space


def _channel_view(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(tuple(values), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def to_pixels(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo the loaders' `(pixel - mean) / std`, so budgets and range checks are in the
    image's own units."""
    return x * _channel_view(std, x) + _channel_view(mean, x)


def to_normalised(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixels back to what the networks were trained on (the loaders' normalisation)."""
    return (x - _channel_view(mean, x)) / _channel_view(std, x)


def logits_of(out: Any) -> torch.Tensor:
    """The retrain networks return `(logits, auxiliary logits or None)`; attacks and
    accuracies use the main logits only."""
    return out[0] if isinstance(out, tuple) else out


class PixelModel(nn.Module):
    """A network that takes pixel images: normalisation is its first layer, so gradients
    and budgets are in pixel units and the attack never has to know the dataset's
    mean/std. Returns logits only.

    `net` is a submodule, so `parameters()`, `train()` and `eval()` reach it;
    `channels_last` feeds the network the memory layout it was trained in."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False) -> None:
        super().__init__()
        if len(mean) != len(std) or any(float(s) <= 0 for s in std):
            raise InputError(f"pixel model: need one positive std per channel mean, "
                             f"got mean {tuple(mean)} and std {tuple(std)}")
        self.net = net
        self.channels_last = channels_last
        # not persistent: they are dataset facts, not weights, and stay out of state_dict
        self.register_buffer("mean", torch.tensor(tuple(mean)).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std)).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.mean) / self.std
        return logits_of(self.net(to_layout(x, self.channels_last)))


# ------------------------------------------------------------------ attack primitives


@contextmanager
def _mode(model: nn.Module, eval_mode: bool) -> Iterator[None]:
    """Eval mode for the attack, then every module back as it was. Per module, not just
    `model.train(was)`: a wrapper made around a network in eval mode is itself in train
    mode, and some networks keep parts (frozen BN) in eval on purpose."""
    modes = [(m, m.training) for m in model.modules()]
    if eval_mode:
        model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy with respect to the input only:
    `autograd.grad` leaves the parameters' `.grad` untouched, so an attack inside a
    training step cannot leak into the optimiser. Summed, not averaged, so each image's
    gradient does not shrink with the batch size (only its sign is used, but a mean over
    a large batch can underflow to exact zeros)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(logits_of(model(x)), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float,
             pixel_range: PixelRange) -> torch.Tensor:
    """Into the eps ball around `x`, then into the valid pixels. Clamping to the range
    second keeps the result in both: the range is a box, the ball is a box around a point
    inside it (`x` is a valid image), and clamping a point of one box into another box
    that overlaps it never takes it out of the first."""
    lo, hi = pixel_range
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), lo, hi)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         pixel_range: PixelRange = (0.0, 1.0), eval_mode: bool = True) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al., arXiv 1412.6572): one step of `eps`
    along the sign of the loss gradient; the exact L-infinity worst case of a model that
    is linear in its input. Returns detached pixel images."""
    x = x.detach()
    with _mode(model, eval_mode):
        grad = _input_grad(model, x, y)
    return _project(x + eps * grad.sign(), x, eps, pixel_range).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
        step_size: float, pixel_range: PixelRange = (0.0, 1.0), random_start: bool = True,
        generator: torch.Generator | None = None, eval_mode: bool = True) -> torch.Tensor:
    """Projected gradient descent on the loss (Madry et al., arXiv 1706.06083): `steps`
    signed steps of `step_size`, each projected back into the ball and the pixel range;
    returns the last iterate (detached).

    `random_start` begins at a uniform point of the ball, so the attack does not start at
    the clean image, where a saturated softmax can give a vanishing gradient. The noise
    comes from `generator` (drawn on its device, then moved), so a seeded generator
    makes the attack reproducible, e.g. across a resumed training run.
    """
    x = x.detach()
    if random_start:
        device = generator.device if generator is not None else x.device
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        x_adv = _project(x + (2 * u.to(x.device) - 1) * eps, x, eps, pixel_range)
    else:
        x_adv = x.clone()
    with _mode(model, eval_mode):
        for _ in range(steps):
            grad = _input_grad(model, x_adv, y)
            x_adv = _project(x_adv + step_size * grad.sign(), x, eps, pixel_range)
    return x_adv.detach()


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Attack:
    """An attack with all its settings fixed (`make_attack` builds and checks one); call
    it as `attack(model, pixels, labels, generator)`."""

    name: str
    eps: float
    steps: int
    step_size: float
    pixel_range: PixelRange
    random_start: bool = True
    #: attack the network in eval mode (evaluation, retraining) or in the mode it is in
    #: (a search's supernet, whose evaluation uses batch statistics)
    eval_mode: bool = True

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return ATTACKS[self.name].run(model, x, y, self, generator)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pixel_range"] = list(self.pixel_range)
        return d


@dataclass(frozen=True)
class AttackKind:
    """What the registry knows of one attack: how to run it and whether it iterates."""

    run: Callable[[nn.Module, torch.Tensor, torch.Tensor, Attack, torch.Generator | None],
                  torch.Tensor]
    iterative: bool
    summary: str


def _run_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: Attack,
              generator: torch.Generator | None) -> torch.Tensor:
    del generator  # deterministic
    return fgsm(model, x, y, a.eps, a.pixel_range, eval_mode=a.eval_mode)


def _run_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: Attack,
             generator: torch.Generator | None) -> torch.Tensor:
    return pgd(model, x, y, a.eps, a.steps, a.step_size, a.pixel_range,
               random_start=a.random_start, generator=generator, eval_mode=a.eval_mode)


ATTACKS: dict[str, AttackKind] = {
    "fgsm": AttackKind(_run_fgsm, iterative=False, summary="one signed step of eps"),
    "pgd": AttackKind(_run_pgd, iterative=True,
                      summary="projected signed steps from a random start"),
}


def attack_names() -> list[str]:
    return sorted(ATTACKS)


def _number(value: float | None, flag: str) -> None:
    if value is not None and not math.isfinite(float(value)):
        raise InputError(f"{flag} must be a finite number, got {value}")


def make_attack(name: str, eps: float | None = None, steps: int | None = None,
                step_size: float | None = None, pixel_range: PixelRange = (0.0, 1.0),
                default_steps: int = 10, random_start: bool = True,
                flag: str = "--", eval_mode: bool = True) -> Attack:
    """Check an attack's settings and fill in the defaults, with one-line errors naming
    the command-line flags (`flag` is their prefix: "--" for `nas attack`, "--adv-" for
    `nas retrain`).

    Defaults: eps is `DEFAULT_EPS_FRACTION` of the range's width (8/255 on [0, 1]);
    PGD takes `default_steps` steps of `STEP_SIZE_FACTOR * eps / steps`; FGSM is one
    step of exactly eps, so a different step count or size is refused rather than
    silently ignored.
    """
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; known attacks: {', '.join(attack_names())}")
    lo, hi = (float(v) for v in pixel_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"pixel range must be two finite numbers low < high, got {pixel_range}")
    _number(eps, f"{flag}eps")
    _number(step_size, f"{flag}step-size")
    if eps is not None and eps < 0:
        raise InputError(f"{flag}eps must be >= 0 (pixel units), got {eps}")
    if steps is not None and steps < 1:
        raise InputError(f"{flag}steps must be at least 1, got {steps}")
    if step_size is not None and step_size <= 0:
        raise InputError(f"{flag}step-size must be positive (pixel units), got {step_size}")
    eps = DEFAULT_EPS_FRACTION * (hi - lo) if eps is None else float(eps)
    if ATTACKS[name].iterative:
        steps = default_steps if steps is None else int(steps)
        step_size = STEP_SIZE_FACTOR * eps / steps if step_size is None else float(step_size)
    else:
        if steps not in (None, 1):
            raise InputError(f"{name} takes exactly one step; drop {flag}steps {steps}")
        if step_size is not None and step_size != eps:
            raise InputError(f"{name} steps exactly eps; drop {flag}step-size {step_size}")
        steps, step_size = 1, eps
    return Attack(name, eps, steps, step_size, (lo, hi), random_start, eval_mode)


# ------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class RobustAccuracy:
    clean_acc: float
    robust_acc: float
    images: int


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack,
                    batch_size: int = 128, generator: torch.Generator | None = None,
                    desc: str = "attack") -> RobustAccuracy:
    """Clean accuracy and accuracy under `attack` of a pixel-space `model` (in eval mode;
    its modes are restored afterwards) on pixel images `x`, in batches, with a progress
    bar on stderr.

    An image counts as robust only if it is classified correctly both clean and attacked:
    the clean image is itself inside the ball, so the worst case over the ball can never
    be better than the clean result, and robust accuracy is never above clean accuracy
    (a PGD run that happens to wander onto the right class does not make a misclassified
    image robust).
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    n = int(x.shape[0])
    clean = robust = 0
    with _mode(model, eval_mode=True):
        bar = tqdm(range(0, n, batch_size), desc=desc, leave=False, disable=None,
                   file=sys.stderr)
        for start in bar:
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            with torch.no_grad():
                ok = logits_of(model(xb)).argmax(1) == yb
            x_adv = attack(model, xb, yb, generator)
            with torch.no_grad():
                ok_adv = ok & (logits_of(model(x_adv)).argmax(1) == yb)
            clean += int(ok.sum())
            robust += int(ok_adv.sum())
            seen = start + xb.shape[0]
            bar.set_postfix(clean=f"{clean / seen:.3f}", robust=f"{robust / seen:.3f}")
    return RobustAccuracy(clean / max(n, 1), robust / max(n, 1), n)
