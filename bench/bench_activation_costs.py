"""What each activation costs on every simulated profile: DARTS_V2 with one activation in
all its convolutions, simulated (roofline) latency and kernel count of each profile's
deployed network, beside ReLU. All figures SIMULATED.

    python bench/bench_activation_costs.py

Writes bench/results_activation_costs.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).with_name("results_activation_costs.json")


def main() -> int:
    from latency.hardware import load_profile, profile_names
    from latency.simulate.roofline import activation_fusion_note, simulate_latency
    from search_spaces.activations import ACTIVATIONS, pair_name
    from search_spaces.genotype_library import DARTS_V2
    from search_spaces.op_spec import op_spec
    from search_spaces.space import get_space

    space = get_space("darts")
    start = time.perf_counter()
    rows = []
    for name in profile_names():
        profile = load_profile(name)
        if profile.source != "simulated":
            continue
        base = None
        for act in ACTIVATIONS:
            g = space.rename_ops(DARTS_V2, lambda op, a=act: pair_name(op, a)
                                 if op_spec(op).takes_activation else op)
            model, shape = space.deployed_network(g, profile)
            sim = simulate_latency(model, shape, profile)
            base = base or sim
            rows.append({"profile": name, "activation": act, "simulated_ms": sim.ms,
                         "kernels": sim.kernels, "vs_relu": sim.ms / base.ms - 1.0,
                         "fusion": activation_fusion_note(profile)})
            print(f"{name:10s} {act:10s} {sim.ms:8.3f} ms {sim.kernels:4d} kernels "
                  f"{100 * (sim.ms / base.ms - 1):+5.1f}%", flush=True)
    OUT.write_text(json.dumps({"command": "python bench/bench_activation_costs.py",
                               "label": "simulated", "wall_s": time.perf_counter() - start,
                               "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
