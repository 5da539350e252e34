"""Run by tests/test_distributed.py, alone or as each rank of `torchrun`: short DARTS
searches through the real driver on a supernet whose batch norms are taken out.

Batch norm is the one place where data-parallel training computes something else than
one process on the global batch (each rank normalises its own slice). Without it the
mathematics is the same, so one process and N ranks must end with the same weights,
architecture parameters and genotype up to float summation order, and the ranks with
bit-identical ones. Usage: `python dp_equivalence_worker.py OUT_DIR`; each variant's
final state goes to OUT_DIR/<variant>-rank<r>.pt.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.data.registry import load_dataset
from nas.distributed.context import from_environment
from nas.run_dir import FollowerRunDir, RunDir
from nas.search.config import preset_config
from nas.search.driver import Search

#: (name, config overrides): first and second order, and a stochastic sampler whose
#: samples must be the same on every rank
VARIANTS: dict[str, dict[str, Any]] = {
    "first_order": {},
    "second_order": {"second_order": True},
    "lognormal": {"sampler": "lognormal"},
}
#: 67 images per search half, batches of 16: the last batch (3 images) splits 2 + 1
LIMIT, BATCH = 134, 16


def without_batch_norm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            without_batch_norm(child)
    return module


def batch_norm_free(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    return lambda *args, **kwargs: without_batch_norm(build(*args, **kwargs))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dp = from_environment()
    data = load_dataset("digits", None, limit=LIMIT)
    for variant, overrides in VARIANTS.items():
        cfg = preset_config("darts", "small").with_overrides(
            epochs=2, init_channels=4, layers=3, batch_size=BATCH, data_limit=LIMIT,
            arch_start_epoch=0, **overrides)
        path = out / f"{variant}-run"
        run: RunDir = (RunDir.create(path, {"search": cfg.to_dict()}) if dp.is_main
                       else FollowerRunDir(path))
        search = Search(cfg, run, log=lambda _: None, data=data, dp=dp)
        search.space.build_supernet = batch_norm_free(  # type: ignore[method-assign]
            search.space.build_supernet)
        result = search.run_all()
        torch.save({"model": search.model.state_dict(),
                    "genotype": json.dumps(search.space.to_json(result.genotype))},
                   out / f"{variant}-rank{dp.rank}.pt")
    dp.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
