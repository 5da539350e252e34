"""What a retrain leaves behind for deployment: a state dict and an ONNX file.

The state dict is plain tensors (loadable with `weights_only=True`); with the run's
`config.json` and `genotype.json` it rebuilds the network (`load_trained`). The ONNX file
is the deployed view: eval mode, logits only, a symbolic batch axis.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from latency.measure.onnx_export import OnnxExportError, export_onnx
from nas.retrain.config import RetrainConfig
from nas.retrain.networks import Arch, build_network, load_arch
from nas.run_dir import RunDir
from search_spaces.errors import InputError, first_line
from search_spaces.fileio import atomic_write_bytes

STATE_DICT = "model.pt"
ONNX_FILE = "model.onnx"


def save_state_dict(net: nn.Module, path: Path) -> None:
    """Weights only, contiguous (not channels-last), written atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def onnx_contents(net: nn.Module) -> str | None:
    """What an ONNX file of `net` holds when that is not simply the network: layers that
    declare ``onnx_holds`` (fake-quantized DSQ, binary IR-Net as float operations)."""
    said = sorted({str(m.onnx_holds) for m in net.modules()
                   if getattr(m, "onnx_holds", None)})
    return "; ".join(said) if said else None


def export_network_onnx(net: nn.Module, input_shape: tuple[int, ...], path: Path) -> str | None:
    """Write the ONNX file; returns why not when ONNX support is missing (not an error:
    the state dict is the primary artifact and the extra is optional), or when a layer
    has no ONNX operator (a module class with ``onnx_exportable = False``: the adder
    layers)."""
    inexpressible = sorted({type(m).__name__ for m in net.modules()
                            if getattr(m, "onnx_exportable", True) is False})
    if inexpressible:
        return (f"ONNX has no operator for {', '.join(inexpressible)} (an adder layer's "
                "-sum|x - w|); the state dict holds the trained network")
    try:
        export_onnx(net, input_shape, path)
    except OnnxExportError as e:
        return str(e)
    return None


def load_trained(run_dir: str | Path) -> tuple[nn.Module, RetrainConfig, Arch]:
    """Rebuild a retrained network from its run directory, in eval mode."""
    run = RunDir.open(run_dir)
    config = run.config()
    if "retrain" not in config:
        raise InputError(f"{run.path} is not a retrain run (no 'retrain' in config.json)")
    cfg = RetrainConfig.from_dict(config["retrain"], where=str(run.path / "config.json"))
    genotype = load_arch(run.path / "genotype.json")
    spec = config.get("dataset_spec") or {}
    net = build_network(genotype, cfg, int(spec.get("in_channels", 3)),
                        int(spec.get("num_classes", 10)))
    path = run.path / STATE_DICT
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist (the retrain has not finished)") from None
    except Exception as e:  # damaged archive, or weights of another network
        first = first_line(e)
        raise InputError(f"cannot load {path}: {first}") from None
    return net.eval(), cfg, genotype
