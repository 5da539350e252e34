"""Search configuration: the papers' hyper-parameters and a small CPU preset.

`paper` presets are the published settings (docs/methods.md#darts for DARTS,
docs/methods.md#p-darts for P-DARTS);
`small` shrinks the network, the epochs and the batch so that a search on the embedded
digits dataset finishes in a few minutes on a 2-core CPU. Everything else (optimisers,
schedules, the order of updates) is the same in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from nas.config_dict import ConfigDict
from search_spaces.errors import InputError


@dataclass(frozen=True)
class SearchConfig(ConfigDict):
    KIND = "search"

    strategy: str = "darts"  # a registered strategy (nas.search.strategy): darts | pdarts
    space: str = "darts"
    dataset: str = "digits"
    data_dir: str | None = None
    hardware: str | None = None
    seed: int = 0
    preset: str = "paper"
    # network
    init_channels: int = 16
    layers: int = 8
    # data
    batch_size: int = 64
    train_portion: float = 0.5
    # weights
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    # architecture
    arch_lr: float = 3e-4
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    arch_grad_clip: float | None = None
    second_order: bool = False
    # schedule: DARTS has one stage; P-DARTS three (per-stage lists)
    epochs: int = 50
    arch_start_epoch: int = 0
    # P-DARTS
    add_layers: tuple[int, ...] = (0,)
    add_width: tuple[int, ...] = (0,)
    num_to_keep: tuple[int, ...] = ()
    skip_dropout: tuple[float, ...] = (0.0,)
    skip_dropout_decay: float = 0.2
    max_skips: int = 2
    # latency (issue 3): lambda of the latency term, optional budget, predictor directory
    latency_weight: float = 0.0
    latency_target_ms: float | None = None
    predictor: str | None = None
    # modelled energy (issue 17): lambda of the energy term (latency.energy_model)
    energy_weight: float = 0.0
    # factorised operator sets (issue 16): the activations searched inside every op that
    # carries one, as a second choice per edge; empty: the plain op set (ReLU)
    activations: tuple[str, ...] = ()
    # named op sets joined by "+" (issue 17): "darts+adder"; empty: the space's own ops
    ops: str = ""
    # architecture sampler (issue 19, search_spaces.arch_samplers): softmax (DARTS) or
    # lognormal; the log-normal's initial sigma, low-rank factor columns, and how its
    # distribution is discretised (mean | median | mc)
    sampler: str = "softmax"
    lognormal_sigma: float = 0.2
    lognormal_rank: int = 0
    discretise: str = "mean"
    # Lipschitz confidence term (issue 19, nas.search.lipschitz_loss; lognormal sampler
    # only): the budget B on the network's Lipschitz bound (None: no term), the level p
    # of P(bound <= B) >= p, and lambda
    lipschitz_budget: float | None = None
    confidence: float = 0.9
    lipschitz_weight: float = 1.0
    # adversarial training during search (issue 19, nas.robust.adversarial_training):
    # weight and architecture steps on attacks of their batches; eps / step size in pixel
    # units, None: the defaults on the dataset's pixel range
    adv_train: str | None = None
    adv_eps: float | None = None
    adv_steps: int | None = None
    adv_step_size: float | None = None
    # bookkeeping
    eval_every: int = 1
    data_limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_stages(self) -> int:
        return len(self.add_layers)


# DARTS `train_search.py` defaults.
DARTS_PAPER = SearchConfig(
    strategy="darts",
    init_channels=16,
    layers=8,
    batch_size=64,
    lr=0.025,
    lr_min=0.001,
    epochs=50,
    arch_lr=3e-4,
    arch_weight_decay=1e-3,
    preset="paper",
)

# P-DARTS `train_search.py` defaults with the paper's dropout rates (issue #29).
PDARTS_PAPER = SearchConfig(
    strategy="pdarts",
    init_channels=16,
    layers=5,
    batch_size=96,
    lr=0.025,
    lr_min=0.0,
    epochs=25,
    arch_start_epoch=10,
    arch_lr=6e-4,
    arch_weight_decay=1e-3,
    arch_grad_clip=5.0,
    add_layers=(0, 6, 12),
    add_width=(0, 0, 0),
    num_to_keep=(5, 3, 1),
    skip_dropout=(0.0, 0.4, 0.7),
    max_skips=2,
    preset="paper",
)

# The small preset runs ~60-150 architecture steps instead of the papers' ~4,000-20,000;
# at the papers' Adam rate (3e-4 / 6e-4 per step) alpha would not leave its uniform start,
# so the rate is scaled up to give a comparable total movement of alpha over the run.
_SMALL: dict[str, Any] = dict(init_channels=8, batch_size=64, preset="small", arch_lr=3e-2)
PRESETS: dict[tuple[str, str], SearchConfig] = {
    ("darts", "paper"): DARTS_PAPER,
    ("pdarts", "paper"): PDARTS_PAPER,
    ("darts", "small"): replace(DARTS_PAPER, layers=5, epochs=12, **_SMALL),
    ("pdarts", "small"): replace(
        PDARTS_PAPER, layers=5, add_layers=(0, 3, 6), epochs=8, arch_start_epoch=3, **_SMALL
    ),
}


def activation_options(cfg: SearchConfig) -> dict[str, Any]:
    """The keyword a space's supernet and derivation take in a factorised search
    (operations x activations); nothing for a plain one, so spaces that cannot search
    activations (refused by `validate_config`) keep their signatures."""
    return {"activations": tuple(cfg.activations)} if cfg.activations else {}


def searched_space(cfg: SearchConfig) -> Any:
    """The space a search runs over: the configured one, over `cfg.ops`' op sets when set
    (`search_spaces.op_set_space`, "darts.darts+adder")."""
    from search_spaces.op_set_space import ops_space
    from search_spaces.space import get_space

    return ops_space(get_space(cfg.space), cfg.ops)


def preset_config(strategy: str, preset: str, space: str = "darts") -> SearchConfig:
    """The preset of `strategy`, with `space`'s own changes to it (NB201's shape)."""
    from search_spaces.space import get_space

    if (strategy, preset) not in PRESETS:
        names = sorted({p for _, p in PRESETS})
        raise InputError(f"unknown preset {preset!r} for {strategy}; known: {', '.join(names)}")
    return replace(PRESETS[(strategy, preset)], space=space,
                   **get_space(space).search_overrides(preset))


def default_preset(dataset: str) -> str:
    """The embedded dataset gets the small preset; real datasets get the papers'."""
    return "small" if dataset == "digits" else "paper"


def validate_config(cfg: SearchConfig) -> None:
    """Reject impossible settings with one-line errors before any work starts."""
    from nas.search.strategy import get_strategy
    from search_spaces.space import get_space

    strategy = get_strategy(cfg.strategy)
    get_space(cfg.space)
    space = searched_space(cfg)
    if cfg.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.epochs <= cfg.arch_start_epoch:
        stage = " of each stage" if cfg.num_stages > 1 else ""
        raise InputError(
            f"--epochs {cfg.epochs} leaves no epoch for the architecture to train: "
            f"{strategy.title} ({cfg.preset} preset) trains "
            f"only the weights for the first {cfg.arch_start_epoch} epochs{stage}; use --epochs "
            f"{cfg.arch_start_epoch + 1} or more")
    layers_error = space.layers_error(cfg.layers)
    if layers_error:
        raise InputError(layers_error)
    if strategy.name not in space.strategies:
        raise InputError(f"{strategy.title} does not run on the {space.name} space (it "
                         f"supports: {', '.join(sorted(space.strategies))})")
    if cfg.init_channels < 2 or cfg.init_channels % 2:
        raise InputError(f"--channels must be an even number >= 2, got {cfg.init_channels}")
    if cfg.latency_weight < 0:
        raise InputError(f"--latency-weight must be >= 0, got {cfg.latency_weight}")
    if cfg.energy_weight < 0:
        raise InputError(f"--energy-weight must be >= 0, got {cfg.energy_weight}")
    if cfg.energy_weight:
        from latency.energy_model import check_energy_space

        check_energy_space(space)
    if cfg.latency_target_ms is not None and cfg.latency_target_ms <= 0:
        raise InputError(f"--latency-target must be positive, got {cfg.latency_target_ms}")
    if cfg.activations:
        from search_spaces.activations import activation

        if not space.searches_activations:
            raise InputError(f"the {space.name} space cannot search activations yet")
        for name in cfg.activations:
            activation(name)
        if len(set(cfg.activations)) != len(cfg.activations):
            raise InputError(f"--activations repeats a name: {','.join(cfg.activations)}")
    _check_sampler(cfg)
    _check_lipschitz(cfg)
    from nas.robust.adversarial_training import check_settings

    check_settings(cfg)
    if not 0.0 < cfg.train_portion < 1.0:
        raise InputError(f"train portion must be in (0, 1), got {cfg.train_portion}")
    if strategy.staged:
        n = cfg.num_stages
        for name in ("add_width", "num_to_keep", "skip_dropout"):
            if len(getattr(cfg, name)) != n:
                raise InputError(f"{strategy.title} needs {n} values for {name}, one per stage")
        keep = list(cfg.num_to_keep)
        if keep != sorted(keep, reverse=True) or keep[-1] != 1:
            raise InputError(f"{strategy.title} num_to_keep must decrease and end with 1")


def _check_sampler(cfg: SearchConfig) -> None:
    from search_spaces.arch_samplers import DISCRETISE_MODES, make_sampler, sampler_names

    if cfg.sampler not in sampler_names():
        raise InputError(f"unknown --sampler {cfg.sampler!r}; known: "
                         f"{', '.join(sampler_names())}")
    if cfg.discretise not in DISCRETISE_MODES:
        raise InputError(f"unknown --discretise {cfg.discretise!r}; known: "
                         f"{', '.join(DISCRETISE_MODES)}")
    if cfg.sampler == "softmax" and (cfg.discretise != "mean" or cfg.lognormal_rank
                                     or cfg.lognormal_sigma != 0.2):
        raise InputError("--discretise, --lognormal-sigma and --lognormal-rank apply to "
                         "--sampler lognormal only")
    try:
        make_sampler(cfg.sampler, **sampler_options(cfg))
    except ValueError as e:
        raise InputError(str(e)) from None


def _check_lipschitz(cfg: SearchConfig) -> None:
    """The Lipschitz term's settings (whether the space has a network form for it is
    checked on a small supernet before the search starts: `nas.cli.search`)."""
    budget = cfg.lipschitz_budget
    if budget is None:
        if cfg.confidence != 0.9 or cfg.lipschitz_weight != 1.0:
            raise InputError("--confidence and --lipschitz-weight apply with "
                             "--lipschitz-budget only")
        return
    if not (budget > 0 and math.isfinite(budget)):
        raise InputError(f"--lipschitz-budget must be a positive number, got {budget}")
    if not 0.0 < cfg.confidence < 1.0:
        raise InputError(f"--confidence must lie strictly between 0 and 1, got "
                         f"{cfg.confidence}")
    if not (cfg.lipschitz_weight >= 0 and math.isfinite(cfg.lipschitz_weight)):
        raise InputError(f"--lipschitz-weight must be >= 0, got {cfg.lipschitz_weight}")
    if cfg.sampler != "lognormal":
        raise InputError(f"--lipschitz-budget needs --sampler lognormal: the {cfg.sampler} "
                         "sampler has no distribution to bound")


def sampler_options(cfg: SearchConfig) -> dict[str, Any]:
    """The options `cfg.sampler` is built with (none for softmax)."""
    if cfg.sampler != "lognormal":
        return {}
    return {"init_sigma": cfg.lognormal_sigma, "rank": cfg.lognormal_rank,
            "discretise": cfg.discretise}
