"""`nas hardware list`: every hardware profile, and what it has to predict latency with.

A profile is only half of what a latency-aware command needs: it also needs samples and
a predictor trained on them, per search space, in the user's directory or the shipped
one. Which of those exist, where they are read from, and how far a predictor can be
trusted (`latency.predictor.trust`) is otherwise found only by running a command and
reading its error. A profile whose YAML does not validate is listed as invalid with its
one-line error, never fatal: one broken file must not hide the others.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from latency.hardware import (
    find_profile_file,
    profile_names,
    profiles_dir,
    read_profile,
    user_profiles_dir,
)
from latency.predictor.artifact import read_metadata
from latency.predictor.locate import default_samples_path, locate_predictor
from latency.predictor.trust import prediction_caution
from latency.samples import load_samples
from search_spaces.errors import InputError, first_line
from search_spaces.space import encoding_space_names, get_space


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hardware",
        help="list hardware profiles, their samples and predictors",
        description="List every hardware profile (your own in $HW_NAS_HOME/"
        "hardware_profiles, then the shipped ones) with its kind, device and source, and "
        "per search space the samples and the trained predictor it has (training samples, "
        "held-out MAPE, and a caution where the predictor is weak).",
    )
    p.add_argument("action", choices=["list"],
                   help="list: every profile, its samples and predictors")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(run=run)


def _where(path: Path) -> str:
    """'user' or 'shipped': the directory a file is read from."""
    return "user" if path.parent.resolve() == user_profiles_dir().resolve() else "shipped"


def _samples(name: str, space: str) -> dict[str, Any]:
    path = default_samples_path(name, space)
    out: dict[str, Any] = {"samples": 0, "samples_path": None, "samples_error": None}
    if not path.is_file():
        return out
    out["samples_path"] = str(path)
    try:
        out["samples"] = len(load_samples(path))
    except InputError as e:
        out["samples_error"] = first_line(e)
    return out


def _predictor(name: str, space: str) -> dict[str, Any]:
    out: dict[str, Any] = {"predictor": None, "n_train": None, "mape": None,
                           "caution": None, "predictor_error": None}
    path = locate_predictor(name, space)
    if path is None:
        return out
    out["predictor"] = str(path)
    try:
        meta = read_metadata(path)
    except InputError as e:
        out["predictor_error"] = first_line(e)
        return out
    extra, metrics = meta.get("extra"), meta.get("heldout_metrics")
    out["n_train"] = extra.get("n_train") if isinstance(extra, dict) else None
    out["mape"] = metrics.get("mape") if isinstance(metrics, dict) else None
    out["caution"] = prediction_caution(meta)
    return out


def profile_row(name: str) -> dict[str, Any]:
    """What `nas hardware list` shows for the profile called `name`."""
    path = find_profile_file(f"{name}.yaml")
    row: dict[str, Any] = {"name": name, "valid": False, "error": None, "kind": None,
                           "device": None, "source": None, "directory": None, "path": None,
                           "shadows_shipped": False}
    if path is None:  # listed a moment ago, gone now
        row["error"] = f"{name}.yaml disappeared while listing"
    else:
        row.update(directory=_where(path), path=str(path))
        row["shadows_shipped"] = (row["directory"] == "user"
                                  and (profiles_dir() / f"{name}.yaml").is_file())
        try:
            profile = read_profile(path)
            if profile.name != name:
                raise InputError(f"{path}: name {profile.name!r} does not match the file "
                                 f"name {name!r}")
            row.update(valid=True, kind=profile.kind, device=profile.device,
                       source=profile.source)
        except InputError as e:
            row["error"] = first_line(e)
    row["spaces"] = {space: {**_samples(name, space), **_predictor(name, space)}
                     for space in [*encoding_space_names(), *variant_spaces(name)]}
    return row


def variant_spaces(name: str) -> list[str]:
    """Op-set variants ("darts.darts+adder") that profile `name` has samples or a
    predictor for, in either directory. They are composed on demand, so there is no list
    of them to make columns from: the files on disk say which exist."""
    fixed = set(encoding_space_names())
    found: set[str] = set()
    for folder in (user_profiles_dir(), profiles_dir()):
        if not folder.is_dir():
            continue
        for path in folder.glob(f"{name}.*"):
            rest = path.name[len(name) + 1:]
            for suffix in (".samples.jsonl", ".predictor"):
                variant = rest[: -len(suffix)] if rest.endswith(suffix) else ""
                if variant and variant not in fixed and _is_space(variant):
                    found.add(variant)
    return sorted(found)


def _is_space(name: str) -> bool:
    try:
        get_space(name)
    except (InputError, KeyError, ValueError):
        return False
    return True


def list_profiles() -> list[dict[str, Any]]:
    return [profile_row(name) for name in profile_names()]


def run(args: argparse.Namespace) -> int:
    rows = list_profiles()
    if args.json:
        print(json.dumps({"user_dir": str(user_profiles_dir()),
                          "shipped_dir": str(profiles_dir()), "profiles": rows}))
        return 0
    print(format_table(rows))
    return 0


def _space_cell(s: dict[str, Any]) -> tuple[str, str]:
    samples = "error" if s["samples_error"] else str(s["samples"])
    if s["predictor"] is None:
        predictor = "-"
    elif s["predictor_error"]:
        predictor = "unreadable"
    else:
        n = s["n_train"] if isinstance(s["n_train"], int) else "?"
        mape = (f"{100 * s['mape']:.1f}%" if isinstance(s["mape"], (int, float))
                else "?")
        predictor = f"{n} / {mape}{' !' if s['caution'] else ''}"
    return samples, predictor


def format_table(rows: list[dict[str, Any]]) -> str:
    """The text form: one table line per profile, then the paths, cautions and errors
    that would not fit in a column."""
    spaces = encoding_space_names()
    header = ["name", "dir", "kind", "source",
              *(f"{s} {what}" for s in spaces for what in ("samples", "predictor")),
              "device"]
    table = [header]
    for r in rows:
        cells = [r["name"], r["directory"] or "?"]
        if r["valid"]:
            cells += [r["kind"], r["source"]]
        else:
            cells += ["INVALID", "-"]
        for space in spaces:
            cells += _space_cell(r["spaces"][space])
        device = r["device"] if r["valid"] else "(see below)"
        cells.append(device if len(device) <= 48 else device[:45] + "...")
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = set(range(4, 4 + 2 * len(spaces)))  # counts and predictor figures
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip()
             for line in table]
    lines.append(f"user dir: {user_profiles_dir()}   shipped dir: {profiles_dir()}")
    lines.append("predictor: training samples / held-out MAPE ('!': see its caution below)")
    notes = []
    for r in rows:
        if not r["valid"]:
            notes.append(f"  {r['name']}: invalid profile: {r['error']}")
        if r["shadows_shipped"]:
            notes.append(f"  {r['name']}: your profile shadows the shipped one of that name")
        for space in r["spaces"]:
            s = r["spaces"][space]
            if space not in spaces:  # an op-set variant: no column of its own
                samples, predictor = _space_cell(s)
                notes.append(f"  {r['name']} {space}: samples {samples}, predictor "
                             f"{predictor}")
            if s["samples_error"]:
                notes.append(f"  {r['name']} {space} samples: {s['samples_error']}")
            if s["predictor"] is not None:
                notes.append(f"  {r['name']} {space} predictor: {s['predictor']}")
            if s["predictor_error"]:
                notes.append(f"  {r['name']} {space} predictor unreadable: "
                             f"{s['predictor_error']}")
            if s["caution"]:
                notes.append(f"  {r['name']} {space} caution: {s['caution']}")
    if notes:
        lines += ["details:", *notes]
    return "\n".join(lines)
