"""The deployed network a profile's latency refers to, and its simulated latency.

Apart from the roofline because it needs the search spaces' networks, which the roofline
itself does not: each space builds its own deployed network
(`SearchSpace.deployed_network`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from latency.hardware import HardwareProfile, load_profile
from latency.simulate.roofline import SimulatedLatency, simulate_latency


def deployed_network(arch: Any, profile: HardwareProfile | str
                     ) -> tuple[nn.Module, tuple[int, ...]]:
    """The discrete network a profile's latency refers to, built from `arch` (of any
    space) in eval mode, and its input shape (no auxiliary head: it is not deployed)."""
    from search_spaces.space import space_of

    if isinstance(profile, str):
        profile = load_profile(profile)
    return space_of(arch).deployed_network(arch, profile)


def simulate_genotype(genotype: Any, profile: HardwareProfile | str,
                      **overrides: Any) -> SimulatedLatency:
    """Simulated latency of `genotype`'s deployed network on `profile`."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    model, shape = deployed_network(genotype, profile)
    return simulate_latency(model, shape, profile, **overrides)
