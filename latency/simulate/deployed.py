"""The deployed network a profile's latency refers to, and its simulated latency.

Apart from the model because it depends on the search spaces' network builders, which the
roofline itself does not need.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from latency.hardware import HardwareProfile, load_profile
from latency.simulate.roofline import SimulatedLatency, simulate_latency


def deployed_network(genotype: Any, profile: HardwareProfile | str) -> tuple[nn.Module, tuple]:
    """The discrete network a profile's latency refers to, built from `genotype` (a DARTS
    genotype or an NB201 cell), and its input shape (no auxiliary head: it is not
    deployed)."""
    from search_spaces.nb201 import Nb201Arch
    from search_spaces.networks import NetworkCIFAR, NetworkImageNet

    if isinstance(profile, str):
        profile = load_profile(profile)
    if isinstance(genotype, Nb201Arch):
        return nb201_deployed_network(genotype, profile)
    net = profile.network
    shape = profile.input_shape
    cls = NetworkImageNet if net.get("layout", "cifar") == "imagenet" else NetworkCIFAR
    model = cls(genotype, C=net["channels"], layers=net["layers"],
                num_classes=net["num_classes"], auxiliary=False, in_channels=shape[0])
    return model.eval(), shape


def nb201_deployed_network(arch: Any, profile: HardwareProfile) -> tuple[nn.Module, tuple]:
    """An NB201 cell's deployed network: the benchmark's CIFAR network (C=16, N=5) with the
    profile's input shape and classes.

    A profile's `network.layers` / `channels` describe the DARTS deployed network (cells
    including the reductions, DARTS' initial channels: 20/36, 14/48, 8/16 in the shipped
    profiles), and have no NB201 reading that is not a guess; NB201's latencies (the
    benchmark's and the imported ones) all refer to its fixed C=16, N=5 network, so that
    is what is built, whatever those two fields say. (Profiles that `nas profile import`
    creates for nb201 record exactly that network: 15 cells, 16 channels.)
    """
    from search_spaces.nb201 import BENCHMARK_CELLS_PER_STAGE, BENCHMARK_CHANNELS, Nb201Network

    net = profile.network
    shape = profile.input_shape
    model = Nb201Network(arch, C=BENCHMARK_CHANNELS, N=BENCHMARK_CELLS_PER_STAGE,
                         num_classes=net["num_classes"], in_channels=shape[0])
    return model.eval(), shape


def simulate_genotype(genotype: Any, profile: HardwareProfile | str,
                      **overrides: Any) -> SimulatedLatency:
    """Simulated latency of `genotype`'s deployed network on `profile`."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    model, shape = deployed_network(genotype, profile)
    return simulate_latency(model, shape, profile, **overrides)
