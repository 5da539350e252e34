"""Per-layer roofline model of a deployed network, for devices that cannot be measured here.

docs/methods.md#roofline-model. The package is split by concern; every name below is
re-exported here, so `from latency.simulate import ...` works as before:

* `tracing`: the kernels one forward pass launches and their FLOPs and bytes
  (`layer_costs`, `LayerCost`, `KINDS`, fusion rules, `BYTES_PER_ELEMENT`, `DEFAULTS`, and
  `register_compute_scale`; the layer specs it reads are `search_spaces.layer_spec`'s,
  re-exported here as `LayerSpec` / `register_layer`);
* `roofline`: their time on a device (`RooflineParams`, `LayerTime`, `SimulatedLatency`,
  `simulate_costs`, `simulate_latency`);
* `deployed`: the network a profile's latency refers to (`deployed_network`,
  `simulate_genotype`);
* `calibration`: fitting the free numbers to measurements (`fit_efficiency`, `FitResult`,
  `FIT_BOUNDS`, `median_latency_ms`, `calibrate_on_this_cpu`, `CALIBRATION_NETWORKS`,
  `with_specs`).

Every kernel the deployed network launches costs

    time = max(FLOPs / (peak_flops * eff), bytes / (bandwidth * eff_memory)) + overhead

and the network's latency is the sum over its kernels. Peak rate, bandwidth and the
per-kernel overhead come from the hardware profile's `specs` (published figures, with their
sources); the efficiency factors are estimates there, or fitted on a measured device of the
same family with `fit_efficiency` (`calibrate_on_this_cpu` does that for this machine).

What counts as a kernel comes from ONE real forward pass (eval mode, `no_grad`, the
profile's batch size, zeros as input):

* modules with a `LayerSpec` (`search_spaces.layer_spec`: Conv2d, Linear, and whatever op
  families register their own layers) are one kernel each, of the spec's kind: FLOPs =
  (2 x MACs + additions) x the spec's compute scale (below 1 for low-bit / adder layers),
  bytes = inputs at the spec's act_bits + parameters at its weight_bits + outputs, each
  capped at the profile's precision. A conv with groups > 1 (depthwise) is its own kind
  with its own, lower `eff_compute_depthwise` (such convs never run near peak); a kind a
  spec brings runs at `RooflineParams.kind_efficiency[kind]`, else eff_compute. A 3x3
  depthwise conv moves about one byte per 2.25 FLOPs, left of every shipped GPU's ridge
  point, so it is memory bound there; the lower factor makes 5x5 ones cost more than 3x3
  ones, as on real devices, and on a single phone core (cache-resident data) it may
  decide their time;
* every other aten op (seen through a `TorchDispatchMode`) is a kernel of its own:
  element-wise ops (ReLU, the additions inside cells), concatenations, pooling, copies and
  eval-mode BatchNorm cost their bytes (inputs + outputs), which makes them memory bound;
  views, reshapes and allocations are free.

Fusion (what a deployment runtime such as TensorRT, TFLite or ONNX Runtime does, and eager
PyTorch does not): with `fold_batchnorm` (default true) an eval-mode BatchNorm whose input
is produced by a conv / linear kernel and read by nothing else is folded into that kernel's
weights and costs nothing; with `fuse_activation` (default true) an activation (ReLU, ...)
whose input is a conv kernel's output (after a folded BN or not), read by nothing else,
runs in that kernel's epilogue and costs nothing. In DARTS cells the ReLU *before* each
conv usually reads a cell state that other edges read too, so it stays a kernel; the
ReLU inside a separable conv (after the first BN) is fused. Profiles of eager PyTorch
(`cpu.yaml`) switch both off, because that is what is measured there.

Bytes are counted at the profile's precision (fp32 = 4 bytes an element, fp16/bf16 = 2,
int8 = 1), every tensor once per kernel (inputs are assumed to stream through the cache
once). The compute peak is `peak_fp32_tflops` for fp32 and the matching
`peak_fp16_tflops` / `peak_int8_tops` when the profile gives them (else the fp32 peak).
"""

from latency.simulate.calibration import (
    CALIBRATION_NETWORKS,
    FIT_BOUNDS,
    FitResult,
    calibrate_on_this_cpu,
    fit_efficiency,
    median_latency_ms,
    with_specs,
)
from latency.simulate.deployed import deployed_network, simulate_genotype
from latency.simulate.roofline import (
    LayerTime,
    RooflineParams,
    SimulatedLatency,
    simulate_costs,
    simulate_latency,
)
from latency.simulate.tracing import (
    BYTES_PER_ELEMENT,
    DEFAULTS,
    KINDS,
    ComputeScale,
    LayerCost,
    layer_costs,
    register_compute_scale,
)
from search_spaces.layer_spec import LayerSpec, register_layer

__all__ = [
    "BYTES_PER_ELEMENT",
    "CALIBRATION_NETWORKS",
    "DEFAULTS",
    "FIT_BOUNDS",
    "KINDS",
    "ComputeScale",
    "FitResult",
    "LayerCost",
    "LayerSpec",
    "LayerTime",
    "RooflineParams",
    "SimulatedLatency",
    "calibrate_on_this_cpu",
    "deployed_network",
    "fit_efficiency",
    "layer_costs",
    "median_latency_ms",
    "register_compute_scale",
    "register_layer",
    "simulate_costs",
    "simulate_genotype",
    "simulate_latency",
    "with_specs",
]
