"""Run configs survive config.json: JSON round trip, tuples, unknown keys, overrides."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import pytest

from nas.retrain.config import RetrainConfig
from nas.retrain.config import preset_config as retrain_preset
from nas.search.config import SearchConfig
from nas.search.config import preset_config as search_preset
from search_spaces.errors import InputError

CONFIGS = [search_preset("pdarts", "small"), search_preset("darts", "paper", "nb201"),
           retrain_preset("small"), retrain_preset("paper", "nb201")]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{type(c).__name__}-{c.preset}")
def test_json_round_trip_gives_back_an_equal_config(cfg) -> None:
    text = json.dumps(cfg.to_dict())
    back = type(cfg).from_dict(json.loads(text))
    assert back == cfg
    for f in fields(cfg):  # tuples come back as tuples, not JSON's lists
        assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name


def test_pdarts_stage_lists_are_lists_in_json_and_tuples_in_the_config() -> None:
    cfg = search_preset("pdarts", "small")
    d = cfg.to_dict()
    assert d["add_layers"] == [0, 3, 6] and isinstance(d["num_to_keep"], list)
    assert SearchConfig.from_dict(d).add_layers == (0, 3, 6)


@pytest.mark.parametrize("cls, kind", [(SearchConfig, "search"), (RetrainConfig, "retrain")])
def test_unknown_keys_are_named_in_one_line(cls, kind) -> None:
    with pytest.raises(InputError, match=f"unknown {kind} config keys: bogus, zzz"):
        cls.from_dict({**cls().to_dict(), "zzz": 1, "bogus": 2})


def test_overrides_skip_unset_options() -> None:
    cfg = retrain_preset("small")
    new = cfg.with_overrides(epochs=3, lr=None, cutout=0)
    assert (new.epochs, new.lr, new.cutout) == (3, cfg.lr, 0)


@pytest.mark.parametrize(("key", "value", "told"), [
    ("epochs", "3", "epochs: input should be a valid integer, got '3'"),
    ("epochs", 3.0, "epochs: input should be a valid integer, got 3.0"),
    ("seed", True, "seed: input should be a valid integer, got True"),
    ("lr", "0.1", "lr: input should be a valid number, got '0.1'"),
    ("hardware", 3, "hardware: input should be a valid string, got 3"),
    ("data_limit", "all", "data_limit: input should be a valid integer, got 'all'"),
])
@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_run_configs_check_their_field_types(kind: str, key: str, value: Any,
                                             told: str) -> None:
    cls = SearchConfig if kind == "search" else RetrainConfig
    with pytest.raises(InputError) as info:
        cls.from_dict({**cls().to_dict(), key: value}, where="run/config.json")
    assert str(info.value) == f"run/config.json: {kind} config: {told}"
    # an int is a float; None is allowed where the field is optional
    assert cls.from_dict({**cls().to_dict(), "lr": 1, "hardware": None}).lr == 1


def test_run_config_tuples_check_their_items() -> None:
    d = SearchConfig().to_dict()
    with pytest.raises(InputError, match=r"search config: add_layers\.1: input should be a "
                                         r"valid integer, got 'a'"):
        SearchConfig.from_dict({**d, "add_layers": [0, "a"]})
    with pytest.raises(InputError, match=r"arch_betas\.1"):
        SearchConfig.from_dict({**d, "arch_betas": [0.5]})
