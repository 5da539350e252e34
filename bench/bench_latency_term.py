"""Cost of the latency term inside an architecture step (target: under 2% of the step).

Times a first-order architecture step of the search supernet with and without the latency
term (the shipped p100 predictor), interleaved, median of repeats, one process.

    python bench/bench_latency_term.py [--channels 8 --layers 5 --batch 64 --size 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latency.predictor.locate import default_predictor_path, load_for_space  # noqa: E402
from nas.search.architect import Architect  # noqa: E402
from nas.search.latency_loss import PredictorLatency, latency_term  # noqa: E402
from search_spaces.space import get_space  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args()
    torch.manual_seed(0)
    space = get_space("darts")
    net = space.build_supernet(a.channels, a.layers, 10, a.in_channels)
    net = net.to(memory_format=torch.channels_last)
    mlp, _ = load_for_space(default_predictor_path("p100"), space)
    term = latency_term(PredictorLatency(mlp), space, space.full_edge_ops(), 1.0)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9)
    plain = Architect(net, 3e-4, (0.5, 0.999), 1e-3, 0.9, 3e-4)
    with_lat = Architect(net, 3e-4, (0.5, 0.999), 1e-3, 0.9, 3e-4, terms=[term])
    x = torch.randn(a.batch, a.in_channels, a.size, a.size).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch,))
    times: dict[str, list[float]] = {"plain": [], "latency": []}
    term_only: list[float] = []
    for i in range(a.repeats + 2):
        for name, arch in (("plain", plain), ("latency", with_lat)):
            t = time.perf_counter()
            arch.step(x, y, x, y, 0.025, opt)
            if i >= 2:
                times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        w = net.arch_weights()
        torch.autograd.grad(term(w), net.arch_parameters())
        if i >= 2:
            term_only.append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"config": vars(a), "arch_step_s": med["plain"],
           "arch_step_with_latency_s": med["latency"],
           "latency_term_fwd_bwd_s": statistics.median(term_only),
           "term_share_of_step": statistics.median(term_only) / med["plain"]}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
