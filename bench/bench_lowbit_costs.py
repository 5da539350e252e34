"""What the simulated profiles say low-bit convolutions cost: DARTS_V2 with its
convolutions in DSQ 8/4/2-bit form and in IR-Net binary form (dense binary convolutions),
each beside the same network with those layers in float (the "twin": every DSQ / binary
conv an ordinary conv of the same shape). Simulated latency (roofline, the profiles'
published low-bit kernel speed-ups) and modelled arithmetic energy; nothing measured.

    python bench/bench_lowbit_costs.py

Writes bench/results_lowbit_costs.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).with_name("results_lowbit_costs.json")


def main() -> int:
    from latency.energy import network_energy
    from latency.hardware import load_profile
    from latency.simulate.roofline import simulate_latency
    from search_spaces.binary_ops import binary_form
    from search_spaces.dsq_ops import quantized_form
    from search_spaces.float_twin import float_twin
    from search_spaces.genotype_library import DARTS_V2
    from search_spaces.space import get_space

    space = get_space("darts")
    forms = {f"dsq{b}": space.rename_ops(DARTS_V2, lambda op, b=b: quantized_form(op, b))
             for b in (8, 4, 2)}
    forms["binary"] = space.rename_ops(DARTS_V2, binary_form)
    start, rows = time.perf_counter(), []
    for name in ("raspi4", "pixel4", "p100"):
        profile = load_profile(name)
        for form, genotype in forms.items():
            net, shape = space.deployed_network(genotype, profile)
            low = simulate_latency(net, shape, profile)
            e_low = network_energy(net, shape, profile.precision)
            twin = float_twin(net)
            flt = simulate_latency(twin, shape, profile)
            e_flt = network_energy(twin, shape, profile.precision)
            row = {"profile": name, "form": form, "simulated_ms": low.ms,
                   "float_twin_ms": flt.ms, "speedup": flt.ms / low.ms,
                   "energy_mj": e_low.mj, "float_twin_energy_mj": e_flt.mj}
            rows.append(row)
            print(f"{name:7s} {form:7s} {low.ms:8.3f} ms vs {flt.ms:8.3f} ms float "
                  f"({row['speedup']:.2f}x); energy {e_low.mj:.3f} vs {e_flt.mj:.3f} mJ",
                  flush=True)
    OUT.write_text(json.dumps({"command": "python bench/bench_lowbit_costs.py",
                               "labels": {"ms": "simulated", "energy": "modelled"},
                               "wall_s": time.perf_counter() - start, "rows": rows},
                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
