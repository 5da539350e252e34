"""`nas latency`: predicted (and, where possible, measured) latency of one network, and
the modelled arithmetic energy of the deployed network it refers to (`latency.energy`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from latency.hardware import load_profile, profile_names
from search_spaces.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="predicted and measured latency of a genotype (or an ONNX file)",
        description="Predict a genotype's deployed latency on a hardware profile with its "
        "trained predictor (mean and ensemble spread), beside the deployed network's "
        "modelled arithmetic energy per image (latency.energy). --measure also times the "
        "deployed network here, when the profile is measured on this machine. An .onnx "
        "file is timed with ONNX Runtime on this CPU.",
    )
    p.add_argument("network", help="published genotype name, genotype file (DARTS, or a "
                   "genotype.json of `nas search --space nb201`), NB201 arch string '|...|', "
                   "or .onnx file")
    p.add_argument("--hardware", required=True, help=f"profile ({', '.join(profile_names())})")
    p.add_argument("--predictor", help="predictor directory (default: the profile's)")
    p.add_argument("--measure", action="store_true", help="also measure on this machine")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def _measure(model_or_path: Any, shape: tuple[int, ...], profile: Any,
             backend: str | None) -> dict:
    from latency.measure import measure
    from latency.profiling import profile_runner

    return _measured_fields(measure(profile_runner(profile, model_or_path, shape, backend)),
                            profile)


def _measured_fields(m: Any, profile: Any) -> dict[str, Any]:
    """A Measurement as `nas latency` reports it, and how it was taken."""
    return {"measured_ms": m.median_ms, "measured_spread": m.spread, "measured_noisy": m.noisy,
            "measured_with": f"{m.backend}, batch {profile.batch_size}, "
                             f"{profile.threads or 1} thread(s), {m.runs} runs, median"}


def _measure_at_state(model: Any, shape: tuple[int, ...], profile: Any,
                      result: dict[str, Any], meta: dict[str, Any] | None) -> dict:
    """The network timed interleaved with the reference network, and the prediction moved
    to the machine state of this measurement, so that the two figures differ only by the
    model's error, not by how busy or warm the machine is now."""
    from latency.profiling import measure_at_state, prediction_at_state

    m, ref = measure_at_state(profile, model, shape)
    out = {**_measured_fields(m, profile), "reference_now_ms": ref.median_ms}
    trained = ((meta or {}).get("extra") or {}).get("reference_ms")
    if result.get("predicted_ms") is not None and trained:
        out["reference_trained_ms"] = float(trained)
        out["predicted_at_state_ms"] = prediction_at_state(
            result["predicted_ms"], float(trained), ref.median_ms)
    return out


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.hardware)
    result: dict[str, Any] = {"hardware": profile.name, "label": profile.prediction_label,
                              "predicted_ms": None, "measured_ms": None, "caution": None}
    if str(args.network).endswith(".onnx"):
        if not Path(args.network).is_file():
            raise InputError(f"ONNX file {args.network} does not exist")
        result.update(_measure(args.network, tuple(profile.input_shape), profile,
                               "onnxruntime-cpu"))
        result["network"] = args.network
        return _print(result, args.json)

    from latency.energy import architecture_energy, network_energy
    from latency.predictor.locate import load_for_space, locate_predictor, require_predictor
    from latency.predictor.trust import prediction_caution
    from search_spaces.activation_encoding import arch_encoding_space
    from search_spaces.space import load_architecture

    # what `nas retrain --genotype` takes: unknown op names fail here, one line
    arch = load_architecture(args.network)
    # a genotype with activation pairs is predicted in the activation-aware encoding
    space = arch_encoding_space(arch)
    result.update({"network": args.network, "space": space.name,
                   "refers_to": space.describe_deployed(profile)})
    # with --measure a missing default predictor only means no prediction
    find = locate_predictor if args.measure else require_predictor
    path = find(profile.name, space.name, args.predictor)
    meta = None
    if path is not None:
        mlp, meta = load_for_space(path, space)
        try:
            code = space.encode(arch)
        except InputError as exc:
            if not args.measure:
                raise
            # --measure still times what the encoding cannot describe (activation pairs)
            result["prediction_note"] = f"no prediction: {exc}"
            meta = None
        else:
            mean, std = mlp.predict(code[None].astype(np.float32))
            result.update({"predicted_ms": float(mean[0]), "predicted_std_ms": float(std[0]),
                           "predictor": str(path), "caution": prediction_caution(meta)})
    if args.measure:
        if profile.source != "measured":
            raise InputError(f"profile {profile.name!r} is {profile.label}: its device is not "
                             "this machine, so --measure cannot time it here")
        model, shape = space.deployed_network(arch, profile)
        # the network timed is the one the energy figure counts: built once
        result.update(network_energy(model, shape, profile.precision).to_dict())
        result.update(_measure_at_state(model, shape, profile, result, meta))
    else:
        result.update(architecture_energy(arch, profile).to_dict())
    return _print(result, args.json)


def _print(r: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(r))
        return 0
    print(f"{r['network']} on {r['hardware']}:")
    if r.get("refers_to"):
        print(f"  network:   {r['refers_to']}")
    if r["predicted_ms"] is not None:
        print(f"  predicted: {r['predicted_ms']:.3f} ms +/- {r['predicted_std_ms']:.3f} "
              f"({r['label']}; predictor {r['predictor']})")
    if r.get("prediction_note"):
        print(f"  predicted: {r['prediction_note']}")
    if r.get("caution"):
        print(f"  caution:   {r['caution']}")
    if r.get("predicted_at_state_ms") is not None:
        print(f"  predicted at this machine state: {r['predicted_at_state_ms']:.3f} ms (the "
              f"reference network takes {r['reference_now_ms']:.3f} ms now, "
              f"{r['reference_trained_ms']:.3f} ms in the predictor's samples)")
    if r["measured_ms"] is not None:
        print(f"  measured:  {r['measured_ms']:.3f} ms (spread {100 * r['measured_spread']:.1f}%"
              f"{', NOISY' if r['measured_noisy'] else ''}; {r['measured_with']})")
    if r.get("energy_mj") is not None:
        print(f"  energy:    {r['energy_mj']:.3g} mJ per image ({r['energy_label']})")
    return 0
