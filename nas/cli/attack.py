"""`nas attack`: clean and adversarial accuracy of a retrained network on its test split.

The network is rebuilt exactly as `nas retrain` built it (the run's config.json and
genotype.json) and given the run's weights: `model.pt` of a finished run, else the
latest `checkpoint.pt` of an unfinished one, or whichever of the two is named. The test
split is the run's own dataset's. Everything is read with `weights_only=True`, so a
run directory from elsewhere cannot execute code.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.data.registry import load_dataset
from nas.data.spec import DatasetSplits
from nas.retrain.config import RetrainConfig
from nas.retrain.export import STATE_DICT
from nas.retrain.networks import Arch, build_network, load_arch
from nas.robust.attacks import (
    ATTACKS,
    DEFAULT_EPS_FRACTION,
    STEP_SIZE_FACTOR,
    Attack,
    PixelModel,
    attack_names,
    make_attack,
    robust_accuracy,
    to_pixels,
)
from nas.run_dir import CHECKPOINT, CONFIG, RunDir
from search_spaces.errors import InputError, first_line

GENOTYPE_FILE = "genotype.json"
#: PGD steps when --steps is not given (a common evaluation strength; Madry et al.
#: evaluate CIFAR-10 with 7 to 20)
DEFAULT_PGD_STEPS = 10
#: images per attack batch: PGD keeps a graph per step alive, so smaller than evaluation
DEFAULT_BATCH = 128


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attack",
        help="accuracy of a retrained network under an adversarial attack (FGSM, PGD)",
        description="Attack a `nas retrain` run's network on its dataset's test split with "
        "an L-infinity attack and report clean and robust accuracy. Budgets are in pixel "
        "units (digits and CIFAR-10 pixels are in [0, 1], so CIFAR's usual 8/255 is "
        "--eps 0.0314); an image counts as robust when it is classified correctly both "
        "clean and attacked.",
    )
    p.add_argument("run_dir", metavar="RUN_OR_CHECKPOINT",
                   help="a `nas retrain` run directory (its model.pt, else its checkpoint.pt), "
                   "or a model.pt / checkpoint.pt inside one")
    p.add_argument("--attack", default="pgd",
                   help=f"{' or '.join(attack_names())} (default pgd)")
    p.add_argument("--eps", type=float,
                   help=f"L-infinity budget in pixel units (default {DEFAULT_EPS_FRACTION:.4g}: "
                   "8/255 of the pixel range's width)")
    p.add_argument("--steps", type=int,
                   help=f"PGD steps (default {DEFAULT_PGD_STEPS}; fgsm takes one)")
    p.add_argument("--step-size", type=float,
                   help=f"PGD step in pixel units (default {STEP_SIZE_FACTOR} * eps / steps)")
    p.add_argument("--no-random-start", action="store_true",
                   help="start PGD at the clean image instead of a random point of the ball")
    p.add_argument("--limit", type=int, help="attack only the first N test images")
    p.add_argument("--seed", type=int, default=0, help="seed of PGD's random starts "
                   "(default 0)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help=f"images per attack batch (default {DEFAULT_BATCH})")
    p.add_argument("--data-dir", help="where the run's dataset is now, if it moved "
                   "(default: the run's --data-dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")


def _locate(arg: str) -> tuple[RunDir, Path]:
    """The run directory and the weights file `arg` names."""
    path = Path(arg)
    if path.is_dir():
        run_path = path
        candidates = [path / STATE_DICT, path / CHECKPOINT]
        weights = next((c for c in candidates if c.is_file()), None)
    elif path.is_file():
        run_path, weights = path.parent, path
    else:
        raise InputError(f"{path} does not exist (give a `nas retrain` run directory)")
    if not (run_path / CONFIG).is_file():
        raise InputError(f"{run_path} is not a `nas retrain` run directory (no {CONFIG})")
    if weights is None:
        raise InputError(f"{run_path} holds no {STATE_DICT} or {CHECKPOINT}: the retrain has "
                         "not started")
    return RunDir(run_path), weights


def _retrain_config(run: RunDir) -> tuple[dict[str, Any], RetrainConfig, Arch]:
    config = run.config()
    if not isinstance(config.get("retrain"), dict):
        raise InputError(f"{run.path} is not a `nas retrain` run directory (no 'retrain' in "
                         f"{CONFIG})")
    cfg = RetrainConfig.from_dict(config["retrain"], where=str(run.path / CONFIG))
    genotype = load_arch(run.path / GENOTYPE_FILE)
    return config, cfg, genotype


def _load_weights(path: Path, genotype: Arch) -> tuple[dict[str, Any], int | None]:
    """The state dict in `path` (a model.pt, or a retrain checkpoint's model), and the
    epochs a checkpoint was trained for (None for a finished run's model.pt)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, i.e. running the file's code
        raise InputError(f"cannot load {path}: not a weights file (damaged, or it holds "
                         "objects other than tensors)") from None
    except Exception as e:  # torch raises several types for damaged archives
        raise InputError(f"cannot load {path}: {first_line(e)}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} holds no network weights (not a state dict)")
    if "kind" in obj:  # a run checkpoint
        if obj.get("kind") != "retrain" or not isinstance(obj.get("model"), dict):
            raise InputError(f"{path} is not a retrain checkpoint")
        if obj.get("genotype") != genotype.to_dict():
            raise InputError(f"{path} was trained for a different genotype than the run's "
                             f"{GENOTYPE_FILE}")
        return obj["model"], int(obj.get("epoch", 0))
    return obj, None


def _network(cfg: RetrainConfig, genotype: Arch, data: DatasetSplits,
             state: dict[str, Any], where: Path) -> nn.Module:
    spec = data.spec
    net = build_network(genotype, cfg, spec.in_channels, spec.num_classes)
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where} does not match the run's network: {first_line(e)}") from None
    return net.eval()


def _attack(args: argparse.Namespace, pixel_range: tuple[float, float]) -> Attack:
    return make_attack(args.attack, args.eps, args.steps, args.step_size, pixel_range,
                       default_steps=DEFAULT_PGD_STEPS, random_start=not args.no_random_start)


def run(args: argparse.Namespace) -> int:
    _check_numbers(args)
    _attack(args, (0.0, 1.0))  # bad attack settings fail before any loading
    run_dir, weights = _locate(args.run_dir)
    config, cfg, genotype = _retrain_config(run_dir)
    state, epoch = _load_weights(weights, genotype)
    data = load_dataset(cfg.dataset, args.data_dir or cfg.data_dir, limit=cfg.data_limit)
    net = _network(cfg, genotype, data, state, weights)
    spec = data.spec
    attack = _attack(args, spec.pixel_range)
    n = data.num_test if args.limit is None else min(args.limit, data.num_test)
    pixels = to_pixels(data.test_x[:n], spec.mean, spec.std)
    model = PixelModel(net, spec.mean, spec.std)
    started = time.perf_counter()
    result = robust_accuracy(model, pixels, data.test_y[:n], attack, args.batch_size,
                             generator=torch.Generator().manual_seed(args.seed),
                             desc=f"{attack.name} eps {attack.eps:.4g}")
    report: dict[str, Any] = {
        "run_dir": str(run_dir.path),
        "weights": str(weights),
        "epochs_trained": cfg.epochs if epoch is None else epoch,
        "epochs": cfg.epochs,
        "genotype_name": config.get("genotype_name"),
        "dataset": cfg.dataset,
        "adv_train": cfg.adv_train,
        "attack": attack.name,
        "eps": attack.eps,
        "steps": attack.steps,
        "step_size": attack.step_size,
        "random_start": attack.random_start and ATTACKS[attack.name].iterative,
        "pixel_range": list(attack.pixel_range),
        "seed": args.seed,
        "images": result.images,
        "clean_acc": result.clean_acc,
        "robust_acc": result.robust_acc,
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(report) if args.json else _human(report))
    return 0


def _human(r: dict[str, Any]) -> str:
    lo, hi = r["pixel_range"]
    levels = r["eps"] / (hi - lo) * 255
    trained = (f"{r['epochs_trained']}/{r['epochs']} epochs"
               + (f", adversarially ({r['adv_train']})" if r["adv_train"] else ""))
    start = ", random start" if r["random_start"] else ""
    return "\n".join([
        f"{r['genotype_name'] or 'network'} of {r['run_dir']} ({trained}), {r['dataset']} "
        f"test split",
        f"  attack      {r['attack']}: eps {r['eps']:.4g} ({levels:.3g}/255 of the pixel range "
        f"[{lo:g}, {hi:g}]), {r['steps']} step(s) of {r['step_size']:.4g}{start}",
        f"  images      {r['images']}",
        f"  clean acc   {r['clean_acc']:.4f}",
        f"  robust acc  {r['robust_acc']:.4f}",
    ])
