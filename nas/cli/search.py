"""`nas search`: differentiable architecture search (DARTS or P-DARTS)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latency.hardware import load_profile, profile_names
from nas import __version__
from nas.cli.resume import (
    THREADS_KEY,
    add_resume_arguments,
    check_resume_flags,
    record_extension,
    resume_threads,
)
from nas.data.registry import dataset_names
from nas.data.spec import DatasetSplits
from nas.distributed import launch
from nas.distributed.context import DataParallel
from nas.robust import adversarial_training as adversarial
from nas.run_dir import FollowerRunDir, RunDir
from nas.search.config import (
    SearchConfig,
    default_preset,
    preset_config,
    searched_space,
    validate_config,
)
from nas.search.driver import Search, SearchResult, load_search_data
from nas.search.strategy import STRATEGIES, get_strategy
from nas.threads import threads_now
from search_spaces.activations import ACTIVATIONS
from search_spaces.arch_samplers import DISCRETISE_MODES, sampler_names
from search_spaces.errors import InputError
from search_spaces.space import DEFAULT_SPACE, get_space, space_names

#: --space names that are not spaces -> (cell space, search strategy): `--space pdarts`
#: is the documented short form of `--space darts --strategy pdarts`. Every registered
#: space is a --space name of its own, searched with DARTS unless --strategy says.
SPACE_ALIASES = {"pdarts": ("darts", "pdarts")}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="run DARTS / P-DARTS architecture search",
        description="Search cells with DARTS or P-DARTS (NAS-Bench-201 cells: DARTS). "
        "Defaults are the papers' settings; on the embedded digits dataset a small preset "
        "finishes in minutes on a CPU.",
    )
    p.add_argument("--space", choices=sorted([*space_names(), *SPACE_ALIASES]),
                   help="cell space: darts or nb201 (NAS-Bench-201 cells); pdarts is short "
                   "for --space darts --strategy pdarts (default: darts)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES),
                   help="search strategy: darts (one stage) or pdarts (progressive stages, "
                   "op pruning; DARTS cells only) (default: darts, or pdarts with --space "
                   "pdarts)")
    p.add_argument("--hardware", help=f"hardware profile ({', '.join(profile_names())}), "
                   "recorded in the run")
    p.add_argument("--dataset", choices=dataset_names(),
                   help="digits (embedded, default) or cifar10 (needs --data-dir)")
    p.add_argument("--data-dir", help="directory of the CIFAR-10 python batches")
    p.add_argument("--preset", choices=["small", "paper"],
                   help="small (default on digits) or paper (default otherwise)")
    p.add_argument("--epochs", type=int, help="epochs (per stage for P-DARTS; default: the "
                   "preset's)")
    p.add_argument("--channels", type=int, help="initial channels of the supernet (default: "
                   "the preset's)")
    p.add_argument("--layers", type=int, help="cells of the supernet (first stage for P-DARTS; "
                   "cells per stage for nb201)")
    p.add_argument("--batch-size", type=int, help="images per batch, for the weight and the "
                   "architecture steps alike (default: the preset's)")
    p.add_argument("--second-order", action="store_true", default=None,
                   help="DARTS second-order (unrolled) architecture gradient")
    p.add_argument("--max-skips", type=int, help="P-DARTS: skip-connects allowed in the "
                   "normal cell (default 2)")
    p.add_argument("--latency-weight", type=float, metavar="LAMBDA",
                   help="add LAMBDA x predicted latency / reference to the architecture loss")
    p.add_argument("--latency-target", type=float, metavar="MS",
                   help="only latency above this budget is penalised, weighted by "
                   "--latency-weight (1 when only a target is given)")
    p.add_argument("--energy-weight", type=float, metavar="LAMBDA",
                   help="add LAMBDA x modelled energy / energy of the uniform supernet to the "
                   "architecture loss (arithmetic energy per image of the profile's deployed "
                   "network, Horowitz 45 nm table; needs --hardware; DARTS cells)")
    p.add_argument("--predictor", help="latency predictor directory (default: the hardware "
                   "profile's: <name>.predictor in ~/.hw-nas/hardware_profiles, else shipped)")
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, help="random seed of weights, data order and splits "
                   "(default 0)")
    p.add_argument("--out", help="run directory (default results/<time>-<space>-<hardware>); "
                   "must not exist or be empty")
    add_resume_arguments(p, "search")
    p.add_argument("--activations", metavar="LIST",
                   help="search the activation inside every op that carries one as a second "
                        "choice per edge, factorised from the op choice: comma-separated "
                        f"names ({', '.join(ACTIVATIONS)}) or 'all' (default: ReLU only)")
    p.add_argument("--ops", metavar="SETS",
                   help="candidate operations: named op sets joined by '+' for their union "
                        "(darts, adder, darts+adder; default: darts, the published eight); "
                        "DARTS cells only")
    p.add_argument("--sampler", choices=sampler_names(),
                   help="how architecture parameters become mixture weights: softmax "
                        "(DARTS, default) or lognormal (per edge a trainable multivariate "
                        "log-normal, sampled at every step; docs/methods.md)")
    p.add_argument("--lognormal-sigma", type=float, metavar="S",
                   help="lognormal: initial standard deviation of log-weights (default 0.2)")
    p.add_argument("--lognormal-rank", type=int, metavar="R",
                   help="lognormal: columns of the low-rank covariance factor (default 0: "
                        "diagonal)")
    p.add_argument("--discretise", choices=DISCRETISE_MODES,
                   help="lognormal: rank candidates by their mean weight (default), median "
                        "weight, or Monte Carlo probability of being the largest (mc)")
    p.add_argument("--lipschitz-budget", type=float, metavar="C",
                   help="lognormal: penalise the architecture distribution while the "
                        "probability that the network's Lipschitz bound stays below C is "
                        "under --confidence (DARTS cells; the bound's median is printed "
                        "after the first epoch and logged every epoch, the scale to pick C "
                        "on; docs/methods.md)")
    p.add_argument("--confidence", type=float, metavar="P",
                   help="with --lipschitz-budget: the level P of P(bound <= C) >= P "
                        "(default 0.9)")
    p.add_argument("--lipschitz-weight", type=float, metavar="LAMBDA",
                   help="with --lipschitz-budget: LAMBDA x the log-units by which the "
                        "bound's P-quantile exceeds C is added to the architecture loss "
                        "(default 1)")
    adversarial.add_arguments(p, "the weight and architecture steps train on attacks of "
                              "their batches")
    launch.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(run=run)


#: argparse destination -> the search config key it sets (what --resume compares)
RESUME_FLAGS = {
    "hardware": "hardware", "dataset": "dataset", "preset": "preset", "epochs": "epochs",
    "channels": "init_channels", "layers": "layers", "batch_size": "batch_size",
    "second_order": "second_order", "max_skips": "max_skips",
    "latency_weight": "latency_weight", "latency_target": "latency_target_ms",
    "predictor": "predictor", "limit": "data_limit", "seed": "seed", "ops": "ops",
    "energy_weight": "energy_weight", "sampler": "sampler",
    "lognormal_sigma": "lognormal_sigma", "lognormal_rank": "lognormal_rank",
    "discretise": "discretise", "lipschitz_budget": "lipschitz_budget",
    "confidence": "confidence", "lipschitz_weight": "lipschitz_weight",
    **{name: name for name in adversarial.SETTINGS},
}


def parse_activations(text: str | None) -> tuple[str, ...] | None:
    """--activations: 'all', or comma-separated names; None when not given. The names are
    checked with the rest of the config (`validate_config`), which a resumed run's saved
    config also goes through."""
    if text is None:
        return None
    if text.strip() == "all":
        return tuple(ACTIVATIONS)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InputError("--activations needs 'all' or a comma-separated list of names")
    return names


def space_and_strategy(args: argparse.Namespace) -> tuple[str, str]:
    """(cell space, strategy) from --space and --strategy; a strategy the space cannot run
    is refused by `validate_config`."""
    name = args.space or DEFAULT_SPACE
    space, strategy = SPACE_ALIASES.get(name, (name, "darts"))
    if args.strategy is not None:
        if name in SPACE_ALIASES and args.strategy != strategy:
            raise InputError(f"--space {name} means {get_strategy(strategy).title}; for "
                             f"--strategy {args.strategy} on {space} cells use --space {space}")
        strategy = args.strategy
    return space, strategy


def _sampler_note(cfg: SearchConfig) -> str:
    if cfg.sampler == "softmax":
        return ""
    rank = f", rank {cfg.lognormal_rank}" if cfg.lognormal_rank else ""
    term = ("" if cfg.lipschitz_budget is None else
            f", Lipschitz budget {cfg.lipschitz_budget:g} at {cfg.confidence:g} (weight "
            f"{cfg.lipschitz_weight:g})")
    return (f"; {cfg.sampler} sampler, sigma0 {cfg.lognormal_sigma}{rank}, "
            f"discretised by {cfg.discretise}{term}")


def _adversarial_note(search: Search) -> str:
    a = search.attack
    if a is None:
        return ""
    return (f"; adversarial training on {a.name}: eps {a.eps:.4g}, {a.steps} step(s) of "
            f"{a.step_size:.4g} in pixel units")


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    if args.extend:
        raise InputError("--extend continues a run: it needs --resume DIR")
    space, strategy = space_and_strategy(args)
    dataset = args.dataset or "digits"
    preset = args.preset or default_preset(dataset)
    cfg = preset_config(strategy, preset, space).with_overrides(
        space=space,
        dataset=dataset,
        data_dir=args.data_dir,
        hardware=args.hardware,
        seed=args.seed if args.seed is not None else 0,
        epochs=args.epochs,
        init_channels=args.channels,
        layers=args.layers,
        batch_size=args.batch_size,
        max_skips=args.max_skips,
        data_limit=args.limit,
        latency_weight=args.latency_weight,
        latency_target_ms=args.latency_target,
        energy_weight=args.energy_weight,
        predictor=args.predictor,
        activations=parse_activations(args.activations),
        ops=args.ops or "",
        sampler=args.sampler,
        lognormal_sigma=args.lognormal_sigma,
        lognormal_rank=args.lognormal_rank,
        discretise=args.discretise,
        lipschitz_budget=args.lipschitz_budget,
        confidence=args.confidence,
        lipschitz_weight=args.lipschitz_weight,
        **adversarial.settings_from_args(args),
    )
    if (cfg.latency_weight or cfg.latency_target_ms) and not cfg.hardware:
        raise InputError("--latency-weight / --latency-target need --hardware NAME")
    if cfg.energy_weight and not cfg.hardware:
        raise InputError("--energy-weight needs --hardware NAME (its precision and network)")
    if args.second_order:
        if not get_strategy(strategy).second_order:
            raise InputError(f"--second-order applies to DARTS only "
                             f"({get_strategy(strategy).title} is first order)")
        cfg = cfg.with_overrides(second_order=True)
    if cfg.dataset == "cifar10" and not cfg.data_dir:
        raise InputError("--dataset cifar10 needs --data-dir (the cifar-10-batches-py folder)")
    validate_config(cfg)
    return cfg


def latency_hooks(cfg: SearchConfig) -> tuple[list[Any], Any, str | None]:
    """The latency term (if asked for), the per-epoch latency probe (if a predictor
    exists for the hardware) and its caution (`latency.predictor.trust`); loading errors
    surface before anything is written."""
    if not cfg.hardware:
        return [], None, None
    from latency.predictor.locate import (
        how_to_make,
        load_for_space,
        locate_predictor,
        require_predictor,
    )
    from nas.search.latency_loss import PredictorLatency, latency_probe, latency_term_factory

    wants_loss = bool(cfg.latency_weight or cfg.latency_target_ms)
    find = require_predictor if wants_loss else locate_predictor
    space = latency_space(cfg)
    path = find(cfg.hardware, space.name, cfg.predictor)
    if path is None:
        if space.name != cfg.space:
            _stderr(f"note: no latency prediction for this search: {cfg.hardware} has no "
                    f"predictor for the {space.name} encoding "
                    f"({how_to_make(cfg.hardware, space.name)})")
        return [], None, None
    from latency.predictor.trust import prediction_caution

    mlp, meta = load_for_space(path, space)
    model = PredictorLatency(mlp)
    label = load_profile(cfg.hardware).prediction_label
    terms = []
    if wants_loss:
        weight = cfg.latency_weight or 1.0
        terms.append(latency_term_factory(model, space, weight, cfg.latency_target_ms))
    return terms, latency_probe(model, space, label), prediction_caution(meta)


def energy_hooks(cfg: SearchConfig) -> list[Any]:
    """The modelled-energy term, when --energy-weight is set."""
    if not cfg.energy_weight or not cfg.hardware:
        return []
    from latency.energy_model import energy_model
    from nas.search.energy_loss import energy_term_factory

    space = latency_space(cfg)
    _stderr(f"building the modelled energy of the {space.name} encoding on {cfg.hardware} ...")
    model = energy_model(space, load_profile(cfg.hardware))
    return [energy_term_factory(model, space, cfg.energy_weight, cfg.activations)]


def lipschitz_hooks(cfg: SearchConfig, data: DatasetSplits) -> list[Any]:
    """The Lipschitz confidence term, when --lipschitz-budget is set; a space or op set
    without a network form for it is refused here, before anything is written."""
    if cfg.lipschitz_budget is None:
        return []
    from nas.search.lipschitz_loss import check_lipschitz_space, lipschitz_term_factory

    spec = data.spec
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    check_lipschitz_space(searched_space(cfg), cfg.activations, shape)
    return [lipschitz_term_factory(cfg.lipschitz_budget, shape, cfg.confidence,
                                   cfg.lipschitz_weight, log=_stderr)]


def derived_energy(cfg: SearchConfig, result: SearchResult) -> dict[str, Any]:
    """The derived genotype's modelled energy on the profile's deployed network."""
    if not cfg.hardware:
        return {}
    from latency.energy import architecture_energy

    energy = architecture_energy(result.genotype, load_profile(cfg.hardware))
    return {"genotype_energy_mj": energy.mj, "multiplications": energy.multiplications,
            "additions": energy.additions, "label": energy.label}


def latency_space(cfg: SearchConfig) -> Any:
    """The space whose encoding the search's predictor reads: the searched space, or its
    activation variant ("darts-act") when the search chooses activations too."""
    from search_spaces.activation_encoding import encoding_space

    return encoding_space(searched_space(cfg), cfg.activations)


def measure_derived(cfg: SearchConfig, result: SearchResult) -> dict[str, Any]:
    """The derived genotype's deployed network timed here, when the profile is this
    machine, interleaved with the reference network; the genotype's predicted latency is
    also given at this measurement's machine state (`prediction_at_state`)."""
    if not cfg.hardware:
        return {}
    profile = load_profile(cfg.hardware)
    if profile.source != "measured":
        return {}
    from latency.profiling import measure_at_state, prediction_at_state

    _stderr(f"measuring the derived genotype's deployed network on {profile.name} ...")
    space = get_space(cfg.space)
    model, shape = space.deployed_network(result.genotype, profile)
    m, ref = measure_at_state(profile, model, shape)
    out: dict[str, Any] = {
        "genotype_measured_latency_ms": m.median_ms, "measured_spread": m.spread,
        "measured_noisy": m.noisy, "measured_with": f"{m.backend}, batch {m.batch_size}, "
        f"{m.threads} thread(s), {m.runs} runs, median", "reference_now_ms": ref.median_ms}
    lat = result.summary.get("latency") or {}
    if lat.get("genotype_predicted_latency_ms") is not None:
        from latency.predictor.artifact import read_metadata
        from latency.predictor.locate import locate_predictor

        path = locate_predictor(cfg.hardware, latency_space(cfg).name, cfg.predictor)
        extra = (read_metadata(path).get("extra") or {}) if path is not None else {}
        trained = extra.get("reference_ms")
        if trained:
            out["reference_trained_ms"] = float(trained)
            out["genotype_predicted_at_state_ms"] = prediction_at_state(
                lat["genotype_predicted_latency_ms"], float(trained), ref.median_ms)
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _open_resume(args: argparse.Namespace) -> tuple[RunDir, SearchConfig, Any]:
    """The run to continue, its config (with --extend's new epochs) and its checkpoint
    (None when it was killed before the first one); refuses what cannot resume exactly."""
    run_dir = RunDir.open(args.resume)
    saved = run_dir.config()
    if not isinstance(saved.get("search"), dict):
        raise InputError(f"{run_dir.path} is not a search run (no 'search' in config.json)")
    cfg = SearchConfig.from_dict(saved["search"], where=str(run_dir.path / "config.json"))
    if args.space is not None or args.strategy is not None:
        space, strategy = space_and_strategy(args)
        if (args.space is not None and space != cfg.space) or strategy != cfg.strategy:
            given = " ".join(f"--{k} {v}" for k, v in (("space", args.space),
                                                       ("strategy", args.strategy)) if v)
            raise InputError(f"{given} conflicts with the run's space {cfg.space} and "
                             f"strategy {cfg.strategy}: --resume continues a run with its "
                             "own settings")
    new_epochs = check_resume_flags(args, saved["search"], RESUME_FLAGS)
    wanted = parse_activations(args.activations)
    if wanted is not None and wanted != tuple(cfg.activations):
        raise InputError(f"--activations {args.activations} conflicts with the run's "
                         f"activations = {list(cfg.activations)}: --resume continues a run "
                         "with its own settings")
    if args.data_dir:  # the data may have moved; it is where the data is, not a setting
        cfg = cfg.with_overrides(data_dir=args.data_dir)
    state = run_dir.load_checkpoint() if run_dir.has_checkpoint() else None
    run_dir.check_logs(state)  # logs the checkpoint cannot explain: refused before any work
    if new_epochs is not None:
        if cfg.num_stages > 1:
            raise InputError("--extend applies to DARTS and NB201 searches; a P-DARTS run's "
                             "stages are fixed when it starts")
        cfg = cfg.with_overrides(epochs=new_epochs)
        validate_config(cfg)
    elif state is not None and _finished(state, cfg, run_dir):
        raise InputError(f"{run_dir.path} already finished ({cfg.epochs} epochs; results in "
                         "genotype.json and summary.json); to search longer add "
                         "--extend --epochs N")
    resume_threads(args, saved)
    return run_dir, cfg, state


def _finished(state: dict[str, Any], cfg: SearchConfig, run_dir: RunDir) -> bool:
    last_stage = int(state.get("stage", 0)) >= cfg.num_stages - 1
    return (last_stage and int(state.get("epoch", 0)) >= cfg.epochs
            and (run_dir.path / "summary.json").is_file())


def run(args: argparse.Namespace) -> int:
    return launch.run_command(args, _run)  # --nproc N: this command again, under torchrun


@dataclass
class _Prepared:
    """What a search needs before its first epoch, made on rank 0 (or alone)."""

    run_dir: RunDir
    cfg: SearchConfig
    state: Any  # the checkpoint to continue from; None for a new run
    data: DatasetSplits
    terms: list[Any]
    probe: Any
    caution: str | None


def _prepare(args: argparse.Namespace) -> _Prepared:
    """Open the run to resume, or check everything and create the new run directory."""
    if args.resume:
        run_dir, cfg, state = _open_resume(args)
        data = load_search_data(cfg)
        terms, probe, caution = _hooks(cfg, data)
        record_extension(run_dir, "search", cfg.to_dict())
        return _Prepared(run_dir, cfg, state, data, terms, probe, caution)
    cfg = config_from_args(args)
    profile = load_profile(cfg.hardware) if cfg.hardware else None
    data = load_search_data(cfg)
    terms, probe, caution = _hooks(cfg, data)  # a missing predictor fails before any write
    out = args.out or _default_out(cfg)
    config: dict[str, Any] = {
        "search": cfg.to_dict(),
        "hardware_profile": profile.to_dict() if profile else None,
        "nas_version": __version__,
        "command": ["nas", *sys.argv[1:]],
        THREADS_KEY: threads_now(),
    }
    run_dir = RunDir.create(out, config)
    return _Prepared(run_dir, cfg, None, data, terms, probe, caution)


def _hooks(cfg: SearchConfig, data: DatasetSplits) -> tuple[list[Any], Any, str | None]:
    """The architecture-loss terms, latency probe and caution of a search."""
    terms, probe, caution = latency_hooks(cfg)
    terms += energy_hooks(cfg)
    terms += lipschitz_hooks(cfg, data)
    return terms, probe, caution


def _follow(shared: tuple[str, dict[str, Any], Any]) -> _Prepared:
    """A rank other than 0: rank 0's run, config and checkpoint, this rank's own data
    and hooks (the data must be readable on every machine), and no writes."""
    path, cfg_dict, state = shared
    cfg = SearchConfig.from_dict(cfg_dict, where=f"{path}/config.json")
    data = load_search_data(cfg)
    terms, probe, caution = _hooks(cfg, data)
    return _Prepared(FollowerRunDir(path), cfg, state, data, terms, probe, caution)


def _run(args: argparse.Namespace, dp: DataParallel) -> int:
    mine: list[_Prepared] = []

    def on_main() -> tuple[str, dict[str, Any], Any]:
        mine.append(_prepare(args))
        p = mine[0]
        return str(p.run_dir.path), p.cfg.to_dict(), p.state

    shared = dp.from_main(on_main)
    prep = mine[0] if dp.is_main else _follow(shared)
    run_dir, cfg = prep.run_dir, prep.cfg
    args.resume_hint = f"nas search --resume {run_dir.path}"
    log = _stderr if dp.is_main else launch.quiet
    search = Search(cfg, run_dir, prep.terms, log=log, data=prep.data, probe=prep.probe, dp=dp)
    if prep.state is not None:
        search.restore(prep.state)  # a checkpoint that does not fit fails before the headline
    log(
        f"{cfg.strategy.upper()} search on {cfg.dataset} ({cfg.preset} preset: "
        f"{_cells(cfg)}, {cfg.init_channels} channels, {cfg.epochs} epochs"
        f"{' per stage' if cfg.num_stages > 1 else ''}; {threads_now()} thread(s)"
        f"{_parallel_note(dp)}{_sampler_note(cfg)}{_adversarial_note(search)}) -> "
        f"{run_dir.path}"
    )
    result = search.run_all()
    if not dp.is_main:
        return 0
    dp.close()  # the other ranks are done; what follows is rank 0's alone
    caution = prep.caution
    measured = measure_derived(cfg, result)
    energy = derived_energy(cfg, result)
    if measured or caution or energy:
        if measured or caution:
            result.summary.setdefault("latency", {}).update(measured)
        if caution:
            result.summary["latency"]["caution"] = caution
        if energy:
            result.summary["energy"] = energy
        run_dir.write_json("summary.json", result.summary)
    _print_summary(result, cfg, args.json)
    return 0


def _parallel_note(dp: DataParallel) -> str:
    return f", {dp.describe()}" if dp.active else ""



def _cells(cfg: SearchConfig) -> str:
    return f"{cfg.layers} {get_space(cfg.space).layers_meaning}"


def _default_out(cfg: SearchConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = get_strategy(cfg.strategy).run_name(cfg.space)
    return Path("results") / f"{stamp}-{name}-{cfg.hardware or 'nohw'}"


def _print_summary(result: SearchResult, cfg: SearchConfig, as_json: bool) -> None:
    s = result.summary
    if as_json:
        print(json.dumps({**s, "run_dir": str(result.run_dir.path)}))
        return
    print(f"search finished: {result.run_dir.path}")
    if s.get("final_val_acc") is not None:
        print(f"  final supernet validation accuracy: {s['final_val_acc']:.3f}")
    print(f"  genotype: {s['genotype_literal']}")
    if "genotypes_by_max_skips" in s:
        print(f"  (normal cell limited to {cfg.max_skips} skip-connects; all limits in "
              "summary.json)")
    if cfg.hardware:
        profile = load_profile(cfg.hardware)
        label = profile.prediction_label
        lat = s.get("latency") or {}
        if "genotype_predicted_latency_ms" in lat:
            print(f"  predicted latency on {cfg.hardware} ({label}): "
                  f"{lat['genotype_predicted_latency_ms']:.3f} ms for the derived genotype")
        if lat.get("caution"):
            print(f"  caution: {lat['caution']}")
        if "genotype_predicted_at_state_ms" in lat:
            print(f"  predicted at the measurement's machine state: "
                  f"{lat['genotype_predicted_at_state_ms']:.3f} ms (reference network "
                  f"{lat['reference_now_ms']:.3f} ms now, {lat['reference_trained_ms']:.3f} "
                  "ms in the predictor's samples)")
        if "genotype_measured_latency_ms" in lat:
            print(f"  measured latency here: {lat['genotype_measured_latency_ms']:.3f} ms "
                  f"({lat['measured_with']})")
        if not lat:
            name = latency_space(cfg).name
            why = (f"no trained predictor for the {name} encoding yet"
                   if name != cfg.space else "no trained predictor yet")
            print(f"  hardware: {cfg.hardware} ({profile.label} profile; {why}, so no "
                  "latency figures)")
        energy = s.get("energy") or {}
        if energy:
            print(f"  energy on {cfg.hardware}: {energy['genotype_energy_mj']:.4f} mJ per image "
                  f"for the derived genotype ({energy['label']})")
    print("  files: genotype.json, log.jsonl, arch_weights.jsonl, checkpoint.pt, summary.json")
