"""The final report of a retrain: how good, how big, how fast, and how each number was got.

Latency appears twice, and the two must never be confused:
- *predicted* for the chosen hardware profile: the profile's predictor applied to the
  genotype. It describes the profile's deployed network (its dataset shape, cells,
  channels, batch), labelled `measured-model` when the predictor learned measurements and
  `simulated` when it learned the roofline simulator's output;
- *measured* here: this retrained network, timed on the machine in hand with the `cpu`
  profile's timing rules (docs/methods.md#measuring-latency), with PyTorch and, when
  installed, ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from latency.hardware import load_profile
from search_spaces.complexity import FLOAT_BOPS_PER_MAC, count_ops, count_parameters

#: the profile whose timing rules (batch, threads, precision, repeats) measure "here"
HERE_PROFILE = "cpu"


def predicted_latency(genotype: Any, hardware: str,
                      predictor: str | None = None) -> dict[str, Any]:
    """The profile's predictor on this genotype, or why there is no prediction; `caution`
    says (one line, or None) when that predictor was trained on too few or too noisy
    samples to take its figure at face value (`latency.predictor.trust`)."""
    from latency.predictor.locate import how_to_make, load_for_space, locate_predictor
    from latency.predictor.trust import prediction_caution
    from search_spaces.activation_encoding import arch_encoding_space

    profile = load_profile(hardware)
    # the encoding that describes it: pairs and adder ops have their own (darts-act, ...)
    space = arch_encoding_space(genotype)
    out: dict[str, Any] = {"hardware": profile.name, "label": profile.prediction_label,
                           "refers_to": space.describe_deployed(profile), "ms": None,
                           "caution": None}
    path = locate_predictor(profile.name, space.name, predictor)
    if path is None:
        out["note"] = (f"no {space.name} predictor for {profile.name}; "
                       f"{how_to_make(profile.name, space.name)}")
        return out
    mlp, meta = load_for_space(path, space)
    mean, std = mlp.predict(space.encode(genotype)[None].astype(np.float32))
    out.update({"ms": float(mean[0]), "std_ms": float(std[0]), "predictor": str(path),
                "caution": prediction_caution(meta)})
    return out


def _how(m: Any, cpu_model: str, runtime: str) -> str:
    return (f"{runtime} on this machine's CPU ({cpu_model}), batch {m.batch_size}, "
            f"{m.threads} thread(s), {m.precision}, median of {m.runs} timed runs after "
            f"warm-up, spread (IQR/median) {100 * m.spread:.1f}%"
            f"{', NOISY' if m.noisy else ''}")


def measured_latency_here(net: nn.Module, input_shape: tuple[int, ...],
                          onnx_path: Path | None = None) -> dict[str, Any]:
    """This network timed here with PyTorch eager, and its ONNX file with ONNX Runtime."""
    from latency.measure import fingerprint, measure, prepare
    from latency.measure.onnx_export import has_module

    here = load_profile(HERE_PROFILE)
    cpu_model = fingerprint().get("cpu_model", "unknown CPU")
    shape = "x".join(str(s) for s in input_shape)
    out: dict[str, Any] = {"network": f"this retrained network, input {shape}"}
    runner = prepare("torch-cpu", net.eval(), input_shape, batch_size=here.batch_size,
                     precision=here.precision, threads=here.threads or 1)
    m = measure(runner)
    out["torch"] = {"ms": m.median_ms, "spread": m.spread, "noisy": m.noisy,
                    "how": _how(m, cpu_model, "PyTorch eager (torch-cpu)")}
    if onnx_path is not None and onnx_path.is_file() and has_module("onnxruntime"):
        runner = prepare("onnxruntime-cpu", str(onnx_path), input_shape,
                         batch_size=here.batch_size, precision=here.precision,
                         threads=here.threads or 1)
        m = measure(runner)
        out["onnxruntime"] = {"ms": m.median_ms, "spread": m.spread, "noisy": m.noisy,
                              "how": _how(m, cpu_model, "ONNX Runtime (onnxruntime-cpu)")}
    return out


def network_size(net: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Parameters and multiply-accumulates of the trained network (no auxiliary head);
    with adder layers their additions, with low-bit layers the bit-operations and the
    MACs per precision: what tells an adder or quantized network from its float form."""
    counts = count_ops(net, input_shape)  # one counting pass; its MACs are count_macs'
    out: dict[str, Any] = {"params": count_parameters(net), "macs": counts.macs}
    if counts.additions:
        out["adder_additions"] = counts.additions
    if counts.bops != FLOAT_BOPS_PER_MAC * counts.macs:
        out["bit_operations"] = counts.bops
        out["macs_by_precision"] = {f"w{w}a{a}": m for (w, a), m
                                    in sorted(counts.by_precision.items(), reverse=True)}
    return out


def modelled_energy(genotype: Any, hardware: str) -> dict[str, Any]:
    """The modelled arithmetic energy per image of the network `hardware`'s latencies
    refer to (`latency.energy`), so a report puts energy beside predicted latency."""
    from latency.energy import architecture_energy

    profile = load_profile(hardware)
    e = architecture_energy(genotype, profile)
    return {"mj": e.mj, "hardware": hardware, "precision": profile.precision,
            "label": e.label}


def format_report(r: dict[str, Any]) -> str:
    """One terminal screen."""
    lines = [
        f"retrained {r['genotype_name']} on {r['dataset']} ({r['network']['layers']} cells, "
        f"{r['network']['channels']} channels, {r['epochs']} epochs) -> {r['run_dir']}",
        f"  test accuracy:         {100 * r['test_acc']:.2f}% ({r['test_images']} held-out "
        "images, evaluated once after training)",
        *([f"  held-out accuracy:     {100 * r['val_acc']:.2f}% ({r['val_images']} training "
           "images kept out of training by --holdout)"] if "val_acc" in r else []),
        f"  parameters:            {r['params']:,} (auxiliary head excluded)",
        f"  multiply-accumulates:  {r['macs']:,} per image",
    ]
    if r.get("adder_additions"):
        lines.append(f"  additions (adder):     {r['adder_additions']:,} per image")
    if r.get("bit_operations"):
        by = ", ".join(f"{k} {v:,}" for k, v in r["macs_by_precision"].items())
        lines.append(f"  bit-operations:        {r['bit_operations']:,} per image (MACs: {by})")
    p = r.get("predicted_latency")
    if p:
        if p.get("ms") is not None:
            lines.append(f"  predicted latency:     {p['ms']:.3f} ms +/- {p['std_ms']:.3f} on "
                         f"{p['hardware']} ({p['label']}; {p['refers_to']})")
        else:
            lines.append(f"  predicted latency:     none for {p['hardware']}: {p['note']}")
        if p.get("caution"):
            lines.append(f"  caution:               {p['caution']}")
    e = r.get("energy")
    if e:
        lines.append(f"  energy (modelled):     {e['mj']:.4f} mJ per image on {e['hardware']}'s "
                     f"deployed network ({e['precision']})")
    m = r.get("measured_latency") or {}
    for key in ("torch", "onnxruntime"):
        if key in m:
            lines.append(f"  measured here:         {m[key]['ms']:.3f} ms ({m[key]['how']})")
    if m.get("skipped"):
        lines.append(f"  measured here:         skipped ({m['skipped']})")
    files = ", ".join(r["files"])
    lines.append(f"  files: {files}")
    if r.get("onnx_note"):
        lines.append(f"  (no ONNX file: {r['onnx_note']})")
    if r.get("onnx_holds"):
        lines.append(f"  (model.onnx holds {r['onnx_holds']})")
    return "\n".join(lines)
