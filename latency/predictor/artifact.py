"""Save and load a trained latency predictor without unpickling anything.

An artifact is a directory with two files:

* ``weights.pt``: the model's ``state_dict`` (tensors only), read back with
  ``torch.load(..., weights_only=True)``, which refuses arbitrary Python objects, so a
  downloaded artifact cannot run code;
* ``predictor.json``: what is needed to rebuild and to trust it: format version, space,
  op set, encoding size and layout, model config, target normalisation, hardware
  profile, dataset, held-out metrics, and the SHA-256 of ``weights.pt`` (a truncated or
  swapped weights file is caught before it is read).

`load_predictor` refuses an artifact trained on a different op set or encoding size
than the caller's space, because a predictor fed someone else's encoding returns
confident nonsense. Every problem is one `InputError` line naming the artifact.
Files are written to temporary names and renamed, so a crash never leaves half an
artifact over a good one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latency.predictor.features import FeatureLayout
from latency.predictor.mlp import LatencyMLP, MLPConfig
from latency.predictor.prior import AdaptedPredictor
from search_spaces.errors import InputError
from search_spaces.fileio import atomic_write_bytes

FORMAT = "hw-nas-latency-predictor"
VERSION = 1
META_NAME = "predictor.json"
WEIGHTS_NAME = "weights.pt"


@dataclass(frozen=True)
class ModelKind:
    """How one kind of latency model is described in `predictor.json` and rebuilt from
    it and its state dict. Every kind answers `predict(X) -> (mean_ms, std_ms)`, has a
    `scale_ms` buffer and a differentiable `forward(enc)` in units of it (what the
    search's latency term calls)."""

    cls: type
    describe: Callable[[Any], dict[str, Any]]
    rebuild: Callable[[Path, FeatureLayout, dict[str, Any], dict[str, Any]], Any]


def _describe_mlp(model: LatencyMLP) -> dict[str, Any]:
    return {"kind": "mlp_ensemble", "config": model.config.to_dict()}


def _rebuild_mlp(src: Path, layout: FeatureLayout, model_meta: dict[str, Any],
                 state: dict[str, Any]) -> LatencyMLP:
    if not isinstance(model_meta.get("config"), dict):
        raise InputError(f"predictor '{src}': model config is malformed")
    try:
        model = LatencyMLP(layout, MLPConfig.from_dict(model_meta["config"]))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"predictor '{src}': model config is malformed ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise InputError(
            f"predictor '{src}': {WEIGHTS_NAME} does not match the model in {META_NAME}"
        ) from None
    model.fitted = True
    return model.eval()


def _rebuild_adapted(src: Path, layout: FeatureLayout, model_meta: dict[str, Any],
                     state: dict[str, Any]) -> AdaptedPredictor:
    try:
        model = AdaptedPredictor.from_state(model_meta, state)
    except InputError as exc:
        raise InputError(f"predictor '{src}': {exc}") from None
    if model.layout.encoding_size != layout.encoding_size:
        raise InputError(f"predictor '{src}': feature layout and encoding size disagree")
    model.fitted = True
    return model.freeze()


#: model kind (as `predictor.json` names it) -> how to describe and rebuild it
MODEL_KINDS: dict[str, ModelKind] = {
    "mlp_ensemble": ModelKind(LatencyMLP, _describe_mlp, _rebuild_mlp),
    "prior_adapted_linear": ModelKind(AdaptedPredictor, lambda m: m.metadata(),
                                      _rebuild_adapted),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_atomic(target: Path, data: bytes) -> None:
    atomic_write_bytes(target, data)


def save_predictor(
    model: LatencyMLP | Any,
    directory: str | os.PathLike[str],
    *,
    space: str,
    op_names: Sequence[str],
    hardware: str,
    dataset: str,
    metrics: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model` (a fitted model of a kind in `MODEL_KINDS`) to `directory` (created
    if missing); returns the directory."""
    kind = next((k for k, c in MODEL_KINDS.items() if isinstance(model, c.cls)), None)
    if kind is None or not getattr(model, "fitted", False):
        raise InputError("only a fitted latency model (ensemble MLP or adapted prior) can "
                         "be saved")
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        weights = buffer.getvalue()
        # fsync'd and renamed into place; predictor.json (written last) carries the
        # weights' checksum, so a crash between the two renames leaves an artifact that
        # is refused in one line on load, never one that loads the wrong weights
        _write_atomic(out / WEIGHTS_NAME, weights)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "space": space,
            "op_names": list(op_names),
            "encoding_size": model.encoding_size,
            "feature_layout": model.layout.to_dict(),
            "model": MODEL_KINDS[kind].describe(model),
            "target_normalisation": {
                "kind": "ratio_to_training_mean",
                "scale_ms": float(model.scale_ms),
                "note": "forward() returns latency_ms / scale_ms; predict() returns ms",
            },
            "hardware": hardware,
            "dataset": dataset,
            "heldout_metrics": dict(metrics or {}),
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            **({"extra": dict(extra)} if extra else {}),
        }
        _write_atomic(out / META_NAME, (json.dumps(meta, indent=2) + "\n").encode())
    except OSError as exc:
        raise InputError(f"cannot write predictor to '{out}': {exc.strerror or exc}") from None
    return out


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The artifact's JSON metadata, checked for shape."""
    src = Path(directory)
    path = src / META_NAME
    if not path.is_file():
        raise InputError(f"predictor '{src}': no {META_NAME} (not a predictor artifact)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise InputError(f"predictor '{src}': {META_NAME} is corrupt ({detail})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"predictor '{src}': {META_NAME} is not a {FORMAT} file")
    if meta.get("version") != VERSION:
        raise InputError(
            f"predictor '{src}': format version {meta.get('version')!r}; "
            f"this code reads version {VERSION}"
        )
    required = ("space", "op_names", "encoding_size", "feature_layout", "model",
                "target_normalisation", "weights_sha256")
    missing = [k for k in required if k not in meta]
    if missing:
        raise InputError(f"predictor '{src}': metadata lacks {', '.join(missing)}")
    if not isinstance(meta["op_names"], list) or not isinstance(meta["encoding_size"], int):
        raise InputError(f"predictor '{src}': op_names / encoding_size are malformed")
    return meta


def load_predictor(
    directory: str | os.PathLike[str],
    *,
    op_names: Sequence[str] | None = None,
    encoding_size: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Rebuild a saved predictor; refuse one made for another op set / encoding size.

    Pass the caller's space's `op_names` and `encoding_size`; any difference (a missing
    op, another order, another size) raises `InputError`.
    """
    src = Path(directory)
    meta = read_metadata(src)
    if op_names is not None and list(op_names) != meta["op_names"]:
        raise InputError(
            f"predictor '{src}' was trained on op set [{', '.join(meta['op_names'])}], "
            f"not [{', '.join(op_names)}]"
        )
    if encoding_size is not None and int(encoding_size) != meta["encoding_size"]:
        raise InputError(
            f"predictor '{src}' expects encodings of size {meta['encoding_size']}, "
            f"not {encoding_size}"
        )
    weights = src / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"predictor '{src}': {WEIGHTS_NAME} is missing")
    if _sha256(weights) != meta["weights_sha256"]:
        raise InputError(f"predictor '{src}': {WEIGHTS_NAME} is corrupt (checksum mismatch)")
    layout = FeatureLayout.from_dict(meta["feature_layout"])
    if layout.encoding_size != meta["encoding_size"]:
        raise InputError(f"predictor '{src}': feature layout and encoding size disagree")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a corrupt file
        raise InputError(
            f"predictor '{src}': {WEIGHTS_NAME} cannot be read ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict):
        raise InputError(f"predictor '{src}': {WEIGHTS_NAME} does not hold a state dict")
    model_meta = meta["model"]
    kind = model_meta.get("kind") if isinstance(model_meta, dict) else None
    if kind not in MODEL_KINDS:
        raise InputError(f"predictor '{src}': unknown model kind {kind!r}; known: "
                         f"{', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind].rebuild(src, layout, model_meta, state), meta
