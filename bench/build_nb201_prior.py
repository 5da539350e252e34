"""Build the shipped NAS-Bench-201 device prior from the 15 measured devices.

Reads ``/work/shared/data/nb201-latency/`` (``--data``; never read by the product at run
time), fits `latency.predictor.prior.DevicePrior` on all 15 devices (latencies below
1 ms treated as not measured, as in `bench_few_shot.py`; its rho / jitter chosen by
leave-one-device-out over the 15) and writes ``hardware_profiles/priors/nb201.json`` +
``nb201.pt`` (about 60 KB) and the data's licence notice beside them
(``hardware_profiles/priors/NOTICE``). The saved prior is read back and checked to
predict exactly as the fitted one.

Run: ``python bench/build_nb201_prior.py`` (about 30 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from bench_few_shot import DEFAULT_DATA, FILES, MIN_MS, load_encoded

from latency.predictor.features import layout_for_space
from latency.predictor.prior import DevicePrior, PriorConfig, shipped_prior_path
from search_spaces.nb201_space import NB201_SPACE

NOTICE = ("Source: HW-NAS-Bench (ICLR 2021) and HELP (NeurIPS 2021) public data, "
          "MIT-licensed (Copyright (c) 2022 GaTech-EIC; Copyright (c) 2024 HayeonLee)")
NOTICE_FILE = f"""Device priors in this directory are learned from measured latencies.

nb201.json / nb201.pt: per-device weights of a latency model fitted on the 15,625
NAS-Bench-201 cells measured on 15 devices (GPUs at batch 1, 32, 256; x86 server CPUs;
ARM boards and phones), built by bench/build_nb201_prior.py.

darts.json / darts.pt: per-device weights fitted on the DARTS-space samples of this
project's simulated profiles (p100, h100, jetson-tx2, raspi4, pixel4: roofline simulations
of datasheet figures, not measurements), built by bench/bench_darts_prior.py; no
third-party data.

{NOTICE}.

MIT License: Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal in the
Software without restriction, including without limitation the rights to use, copy,
modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following
conditions: The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software. THE SOFTWARE IS PROVIDED "AS IS",
WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=shipped_prior_path(NB201_SPACE.name),
                    help="the prior's JSON path (the .pt goes beside it)")
    args = ap.parse_args(argv)
    if not all((args.data / f).exists() for f in FILES):
        print(f"data files {FILES} not found in {args.data}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    archs, X, Y, cols = load_encoded(args.data)
    Ym = np.where(Y >= MIN_MS, Y, np.nan)
    prior = DevicePrior.from_matrix(
        X, Ym, cols, layout_for_space(NB201_SPACE), config=PriorConfig(min_ms=MIN_MS),
        space=NB201_SPACE.name, op_names=list(NB201_SPACE.op_names), notice=NOTICE,
        log=print,
    )
    meta = prior.save(args.out)
    (meta.parent / "NOTICE").write_text(NOTICE_FILE)
    back = DevicePrior.load(meta, op_names=NB201_SPACE.op_names,
                            encoding_size=NB201_SPACE.encoding_size)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(X), 20, replace=False)
    test = rng.choice(len(X), 500, replace=False)
    j = cols.index("raspi4_bs1_ms")
    ok = Y[idx, j] >= MIN_MS
    a = prior.adapt(X[idx][ok], Y[idx, j][ok]).predict(X[test])
    b = back.adapt(X[idx][ok], Y[idx, j][ok]).predict(X[test])
    if not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])):
        print("the saved prior does not predict as the fitted one", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in (meta, meta.with_suffix(".pt")))
    print(f"wrote {meta} and {meta.with_suffix('.pt').name} ({size / 1024:.0f} KiB), "
          f"devices {len(prior.devices)}, features {prior.features.num_features}, "
          f"rho {prior.rho:g}, jitter {prior.jitter:g}, "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
