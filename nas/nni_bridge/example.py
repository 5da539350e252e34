"""A tiny NNI DARTS search on the embedded digits, without and with our latency penalty.

    python -m nas.nni_bridge.example --hardware p100 --weight 5 --steps 20

Both runs start from the same seed (same supernet weights, alphas and batches); the only
difference is the penalty in the architecture loss. Each prints the architecture NNI's
DARTS exports (converted to our genotype) and the latency our `--hardware` predictor
gives it (labelled simulated or measured-model, as everywhere in hw-nas). Needs the `nni`
extra (``pip install 'hw-nas[nni]'``).

The digits are 8x8 grey images; NNI's DARTS space has a CIFAR stem that reads 3
channels, so the grey channel is repeated three times.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nas.nni_bridge._nni import require_nni
from nas.nni_bridge.mapping import genotype_from_export
from nas.nni_bridge.penalty import LatencyPenalty
from search_spaces.errors import InputError


class MomentumSGD(torch.optim.SGD):
    """SGD with the DARTS weight-step momentum (NNI's evaluator takes an optimizer
    class, learning rate and weight decay only)."""

    def __init__(self, params: Any, lr: float = 0.025, weight_decay: float = 3e-4) -> None:
        super().__init__(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def quiet_nni() -> None:
    """NNI 3.0 on torch 2.13 warns at import that two new torch.nn classes are no
    nn.Module (`torch.nn.Buffer`, `LinearCrossEntropyOptions`; neither is used by the
    DARTS space); Lightning logs its device banner. Keep the example's output readable."""
    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "nni"):
        logging.getLogger(name).setLevel(logging.ERROR)


def digits_splits(seed: int, batch: int, steps: int) -> tuple[Any, Any]:
    """(train, val) tensor pairs from the digits' train part: disjoint halves, shuffled
    with `seed`, 3 channels, `steps` batches each (cycled if the half is shorter)."""
    from nas.data.registry import load_dataset

    data = load_dataset("digits", None)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(data.num_train, generator=g)
    x = data.train_x[order].expand(-1, 3, -1, -1).contiguous()
    y = data.train_y[order]
    half = data.num_train // 2
    need = batch * steps
    if batch > half:
        raise InputError(f"--batch {batch} is larger than half the digits' train part ({half})")

    def take(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(need) % xs.shape[0]
        return xs[idx], ys[idx]

    return take(x[:half], y[:half]), take(x[half:], y[half:])


def build_evaluator(train: tuple[torch.Tensor, torch.Tensor],
                    val: tuple[torch.Tensor, torch.Tensor], batch: int, steps: int,
                    callbacks: Sequence[Any] = ()) -> Any:
    """NNI's classification evaluator with the DARTS weight optimiser (SGD, momentum 0.9,
    lr 0.025, weight decay 3e-4), one epoch of `steps` batches, quiet Lightning."""
    nni = require_nni()
    from nni.nas.evaluator.pytorch import Classification
    from torch.utils.data import DataLoader, TensorDataset

    def loader(xy: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return nni.trace(DataLoader)(TensorDataset(*xy), batch_size=batch, shuffle=False)

    return Classification(
        optimizer=MomentumSGD, learning_rate=0.025, weight_decay=3e-4,
        train_dataloaders=loader(train), val_dataloaders=loader(val), num_classes=10,
        max_epochs=1, limit_train_batches=steps, num_sanity_val_steps=0,
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))


def run_search(*, penalty: LatencyPenalty | None, meter: LatencyPenalty, steps: int,
               batch: int, channels: int, layers: int, seed: int, arc_lr: float,
               experiment_dir: str | Path | None = None) -> dict[str, Any]:
    """One NNI DARTS search (with `penalty` in its architecture loss, or plain NNI DARTS
    when None); `meter` prices the result. With `experiment_dir` it runs as NNI users do,
    through `NasExperiment` (which also writes NNI's experiment manifest under
    ~/nni-experiments); without, it drives the strategy's documented `mutate_model` /
    `mutate_evaluator` directly."""
    require_nni()
    from nni.nas.hub.pytorch import DARTS as NniDartsSpace
    from nni.nas.strategy import DARTS

    from nas.nni_bridge.strategy import latency_darts

    torch.manual_seed(seed)
    train, val = digits_splits(seed, batch, steps)
    evaluator = build_evaluator(train, val, batch, steps)
    model_space = NniDartsSpace(width=channels, num_cells=layers, dataset="cifar")
    kwargs: dict[str, Any] = {"arc_learning_rate": arc_lr, "gradient_clip_val": 5.0}
    strategy = (DARTS(**kwargs) if penalty is None
                else latency_darts(penalty=penalty, **kwargs))
    t0 = time.perf_counter()
    if experiment_dir is not None:
        from nni.nas.experiment import NasExperiment

        exp = NasExperiment(model_space, evaluator, strategy)
        exp.config.experiment_working_directory = str(experiment_dir)
        exp.run()
        oneshot = strategy.oneshot_module
    else:
        supernet = strategy.mutate_model(model_space)
        evaluator = strategy.mutate_evaluator(evaluator)
        evaluator.evaluate(supernet)
        oneshot = evaluator.module
    seconds = time.perf_counter() - t0
    export = oneshot.export()
    genotype = genotype_from_export(export)
    return {
        "latency_weight": 0.0 if penalty is None else penalty.weight,
        "target_ms": None if penalty is None else penalty.target_ms,
        "genotype": str(genotype),
        "genotype_ms": meter.genotype_ms(genotype),
        "soft_ms": meter.predicted_ms(oneshot),
        "seconds": seconds,
        "steps": steps,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nas.nni_bridge.example",
                                description=__doc__.splitlines()[0])
    p.add_argument("--hardware", required=True, help="profile whose DARTS predictor prices "
                   "the architectures (e.g. p100)")
    p.add_argument("--predictor", help="a predictor directory instead of the profile's")
    p.add_argument("--weight", type=float, default=5.0, help="latency weight (default 5)")
    p.add_argument("--target-ms", type=float, help="budget form: penalise latency above it")
    p.add_argument("--steps", type=int, default=20, help="search steps (default 20)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--layers", type=int, default=5, help="cells (default 5)")
    p.add_argument("--arc-lr", type=float, default=3e-4,
                   help="NNI's arc_learning_rate (default 3e-4, NNI's and DARTS')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: as `nas search` "
                   "chooses, the usable cores not busy with other work)")
    p.add_argument("--experiment", action="store_true",
                   help="run through nni.nas.experiment.NasExperiment (writes NNI's "
                   "experiment files to a temporary directory and ~/nni-experiments)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args(argv)
    try:
        if a.steps < 1 or a.batch < 1 or a.channels < 1 or a.layers < 3:
            raise InputError("--steps, --batch, --channels must be >= 1 and --layers >= 3")
        if a.threads is not None and a.threads < 1:
            raise InputError("--threads must be >= 1")
        quiet_nni()
        require_nni()
        quiet_nni()   # again: NNI and Lightning set their loggers' levels on import
        if a.threads:
            torch.set_num_threads(a.threads)
        else:
            from nas.threads import use_default_threads

            use_default_threads()
        meter = LatencyPenalty.for_hardware(a.hardware, 1.0, predictor=a.predictor)
        penalty = LatencyPenalty(meter.model, a.weight, a.target_ms, label=meter.label)
        common = dict(meter=meter, steps=a.steps, batch=a.batch, channels=a.channels,
                      layers=a.layers, seed=a.seed, arc_lr=a.arc_lr)
        runs = []
        with tempfile.TemporaryDirectory(prefix="nni-bridge-") as tmp:
            for pen in (None, penalty):
                where = Path(tmp) / ("with" if pen else "without") if a.experiment else None
                runs.append(run_search(penalty=pen, experiment_dir=where, **common))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base, lat = runs[0]["genotype_ms"], runs[1]["genotype_ms"]
    out = {"hardware": a.hardware, "label": meter.label, "runs": runs,
           "threads": torch.get_num_threads(), "arc_lr": a.arc_lr,
           "derived_change_pct": 100.0 * (lat - base) / base}
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"NNI DARTS on digits, {a.steps} steps, batch {a.batch}, C={a.channels}, "
          f"{a.layers} cells, arc lr {a.arc_lr:g}, {torch.get_num_threads()} thread(s); "
          f"latency predicted for {a.hardware} ({meter.label})")
    for r in runs:
        form = (f"weight {r['latency_weight']:g}" if r["target_ms"] is None
                else f"weight {r['latency_weight']:g}, target {r['target_ms']:g} ms")
        print(f"\n{'with' if r['latency_weight'] else 'without'} the penalty ({form}), "
              f"{r['seconds']:.0f} s:")
        print(f"  derived: {r['genotype']}")
        print(f"  derived architecture: {r['genotype_ms']:.3f} ms; soft architecture: "
              f"{r['soft_ms']:.3f} ms")
    print(f"\nderived latency with the penalty vs without: {out['derived_change_pct']:+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
