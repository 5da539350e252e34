"""`nas retrain`: train a genotype's network from scratch, report, export."""

from __future__ import annotations

import argparse
import json
import sys
import time
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
from nas.data.registry import dataset_names, load_dataset
from nas.data.spec import DatasetSpec
from nas.distributed import launch
from nas.distributed.context import DataParallel
from nas.retrain.config import PRESET_NAMES, RetrainConfig, preset_config, validate_config
from nas.retrain.export import (
    ONNX_FILE,
    STATE_DICT,
    export_network_onnx,
    onnx_contents,
    save_state_dict,
)
from nas.retrain.networks import Arch, load_arch, resolve_arch, save_arch
from nas.retrain.report import (
    format_report,
    measured_latency_here,
    modelled_energy,
    network_size,
    predicted_latency,
)
from nas.retrain.trainer import Retrainer, check_checkpoint, check_holdout
from nas.robust import adversarial_training as adversarial
from nas.robust.adversarial_training import training_attack
from nas.run_dir import FollowerRunDir, RunDir
from nas.search.config import default_preset
from nas.threads import threads_now
from search_spaces.errors import InputError
from search_spaces.genotype_library import published_names
from search_spaces.space import claiming_space, get_space, space_of

GENOTYPE_FILE = "genotype.json"
REPORT_FILE = "report.json"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retrain",
        help="train a genotype's network from scratch (its space's published recipe)",
        description="Train the discrete network of a genotype from scratch with its space's "
        "published evaluation recipe (DARTS cells: DARTS train.py, with auxiliary head, "
        "cutout and drop-path; NAS-Bench-201 cells: the benchmark's own training), then "
        "report test accuracy, size and latency, and export a state dict and ONNX. On the "
        "embedded digits dataset a small preset finishes in about a minute.",
    )
    p.add_argument("--genotype", help=f"published name ({', '.join(published_names())}), a "
                   "genotype file (genotype.json from `nas search`, or a DARTS literal), or a "
                   "NAS-Bench-201 arch string (|op~0|+...|)")
    p.add_argument("--dataset", choices=dataset_names(),
                   help="digits (embedded, default) or cifar10 (needs --data-dir)")
    p.add_argument("--data-dir", help="directory of the CIFAR-10 python batches")
    p.add_argument("--hardware",
                   help=f"profile to predict latency for ({', '.join(profile_names())})")
    p.add_argument("--predictor", help="latency predictor directory (default: the hardware "
                   "profile's: <name>.predictor in ~/.hw-nas/hardware_profiles, else shipped)")
    p.add_argument("--preset", choices=PRESET_NAMES,
                   help="small (default on digits) or paper (default otherwise); "
                   "each space has its own")
    p.add_argument("--epochs", type=int, help="epochs (default: the preset's)")
    p.add_argument("--channels", type=int, help="initial channels (default: the preset's)")
    p.add_argument("--layers", type=int, help="cells (NAS-Bench-201: cells per stage, "
                   "default 5)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: the preset's)")
    p.add_argument("--lr", type=float, help="initial learning rate (default: the preset's)")
    p.add_argument("--drop-path", type=float, help="final drop-path probability")
    p.add_argument("--cutout", type=int, help="cutout square side in pixels (0: off)")
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, help="random seed of weights, data order and "
                   "drop-path (default 0)")
    p.add_argument("--holdout", type=int, metavar="N",
                   help="hold N training images out of training and report their accuracy "
                   "(val_acc) after it: a score to choose on that is not the test split "
                   "(default 0)")
    adversarial.add_arguments(p, "train on attacks of every batch against the current "
                              "weights")
    p.add_argument("--no-measure", action="store_true",
                   help="do not time the trained network on this machine")
    p.add_argument("--out", help="run directory (default results/<time>-retrain-<genotype>); "
                   "must not exist or be empty")
    add_resume_arguments(p, "retrain")
    launch.add_arguments(p)
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(run=run)


#: argparse destination -> the retrain config key it sets (what --resume compares)
RESUME_FLAGS = {
    "dataset": "dataset", "hardware": "hardware", "predictor": "predictor", "preset": "preset",
    "epochs": "epochs", "channels": "init_channels", "layers": "layers",
    "batch_size": "batch_size", "lr": "lr", "drop_path": "drop_path", "cutout": "cutout",
    "limit": "data_limit", "seed": "seed", "holdout": "holdout",
    **{name: name for name in adversarial.SETTINGS},
}


def config_from_args(args: argparse.Namespace, arch: Arch) -> RetrainConfig:
    if args.extend:
        raise InputError("--extend continues a run: it needs --resume DIR")
    dataset = args.dataset or "digits"
    preset = args.preset or default_preset(dataset)
    cfg = preset_config(preset, space_of(arch).name).with_overrides(
        dataset=dataset, data_dir=args.data_dir, hardware=args.hardware,
        predictor=args.predictor, seed=args.seed if args.seed is not None else 0,
        epochs=args.epochs, init_channels=args.channels, layers=args.layers,
        batch_size=args.batch_size, lr=args.lr, drop_path=args.drop_path, cutout=args.cutout,
        data_limit=args.limit, holdout=args.holdout,
        **adversarial.settings_from_args(args),
    )
    if cfg.dataset == "cifar10" and not cfg.data_dir:
        raise InputError("--dataset cifar10 needs --data-dir (the cifar-10-batches-py folder)")
    if cfg.predictor and not cfg.hardware:
        raise InputError("--predictor needs --hardware NAME (the profile it predicts)")
    validate_config(cfg)
    return cfg


def _genotype(name_or_path: str) -> Arch:
    return resolve_arch(name_or_path)  # unknown op names fail here, one line


def _genotype_name(arg: str) -> str:
    """A short name for messages and the default run directory: the published name, the
    file's stem, or its folder's name for a search run's `genotype.json`."""
    if arg in published_names():
        return arg
    claimed = claiming_space(arg)
    if claimed is not None:  # a space's text form, e.g. an NB201 arch string
        return f"{claimed.name}-cell"
    path = Path(arg)
    return path.parent.name if path.stem == "genotype" and path.parent.name else path.stem


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _open_resume(args: argparse.Namespace
                 ) -> tuple[RunDir, RetrainConfig, Arch, str, dict[str, Any] | None]:
    """The run to continue, its config (with --extend's new epochs), genotype, name and
    checkpoint (None when killed before the first); refuses what cannot resume exactly."""
    run_dir = RunDir.open(args.resume)
    saved = run_dir.config()
    if not isinstance(saved.get("retrain"), dict):
        raise InputError(f"{run_dir.path} is not a retrain run (no 'retrain' in config.json)")
    cfg = RetrainConfig.from_dict(saved["retrain"], where=str(run_dir.path / "config.json"))
    genotype = load_arch(run_dir.path / GENOTYPE_FILE)
    if args.genotype and _genotype(args.genotype) != genotype:
        raise InputError(f"--genotype {args.genotype} is not the genotype {run_dir.path} was "
                         "trained for; drop --genotype to resume it")
    new_epochs = check_resume_flags(args, saved["retrain"], RESUME_FLAGS)
    if args.data_dir:  # the data may have moved; it is where the data is, not a setting
        cfg = cfg.with_overrides(data_dir=args.data_dir)
    state = run_dir.load_checkpoint() if run_dir.has_checkpoint() else None
    if state is not None:
        check_checkpoint(state, genotype, run_dir)
    run_dir.check_logs(state)  # logs the checkpoint cannot explain: refused before any work
    if new_epochs is not None:
        cfg = cfg.with_overrides(epochs=new_epochs)
        validate_config(cfg)
    elif (state is not None and int(state.get("epoch", 0)) >= cfg.epochs
          and (run_dir.path / REPORT_FILE).is_file()):
        raise InputError(f"{run_dir.path} already finished ({cfg.epochs} epochs; results in "
                         f"{REPORT_FILE}); to train longer add --extend --epochs N")
    resume_threads(args, saved)
    return run_dir, cfg, genotype, saved.get("genotype_name", "genotype"), state


def _prediction(genotype: Arch, cfg: RetrainConfig) -> dict[str, Any] | None:
    """The predicted latency for the run's profile; called before any training or write,
    so an unknown profile or a missing / damaged predictor fails first."""
    return predicted_latency(genotype, cfg.hardware, cfg.predictor) if cfg.hardware else None


def _resolve_adversarial(cfg: RetrainConfig, spec: DatasetSpec) -> RetrainConfig:
    """Adversarial training's defaults made explicit (they depend on the dataset's pixel
    range), so config.json says exactly which attack the run trained on."""
    attack = training_attack(cfg, spec.pixel_range)
    if attack is None:
        return cfg
    return cfg.with_overrides(adv_eps=attack.eps, adv_steps=attack.steps,
                              adv_step_size=attack.step_size)


def _create(args: argparse.Namespace
            ) -> tuple[RunDir, RetrainConfig, Arch, str, Any, dict[str, Any] | None]:
    if not args.genotype:
        raise InputError("--genotype NAME|PATH is required (or --resume DIR)")
    genotype = _genotype(args.genotype)
    cfg = config_from_args(args, genotype)
    profile = load_profile(cfg.hardware) if cfg.hardware else None
    prediction = _prediction(genotype, cfg)
    data = load_dataset(cfg.dataset, cfg.data_dir, limit=cfg.data_limit)
    cfg = _resolve_adversarial(cfg, data.spec)
    if cfg.holdout:  # a holdout that leaves nothing fails before any write
        check_holdout(cfg.holdout, data.num_train)
    name = _genotype_name(args.genotype)
    out = args.out or Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-retrain-{name}"
    spec = data.spec
    config = {
        "retrain": cfg.to_dict(),
        "genotype": genotype.to_dict(),
        "genotype_name": name,
        "genotype_source": args.genotype,
        "dataset_spec": {"name": spec.name, "in_channels": spec.in_channels,
                         "image_size": spec.image_size, "num_classes": spec.num_classes},
        "hardware_profile": profile.to_dict() if profile else None,
        "nas_version": __version__,
        "command": ["nas", *sys.argv[1:]],
        THREADS_KEY: threads_now(),
    }
    run_dir = RunDir.create(out, config)
    save_arch(genotype, run_dir.path / GENOTYPE_FILE)
    return run_dir, cfg, genotype, name, data, prediction


def run(args: argparse.Namespace) -> int:
    return launch.run_command(args, _run)  # --nproc N: this command again, under torchrun


def _prepare(args: argparse.Namespace) -> tuple[RunDir, RetrainConfig, Arch, str, Any,
                                                 dict[str, Any] | None, dict[str, Any] | None]:
    """Open the run to resume, or check everything and create the new run directory."""
    if args.resume:
        run_dir, cfg, genotype, name, state = _open_resume(args)
        prediction = _prediction(genotype, cfg)
        data = load_dataset(cfg.dataset, cfg.data_dir, limit=cfg.data_limit)
        record_extension(run_dir, "retrain", cfg.to_dict())
        return run_dir, cfg, genotype, name, data, prediction, state
    run_dir, cfg, genotype, name, data, prediction = _create(args)
    return run_dir, cfg, genotype, name, data, prediction, None


def _run(args: argparse.Namespace, dp: DataParallel) -> int:
    mine: list[Any] = []

    def on_main() -> tuple[str, dict[str, Any], Arch, str, Any]:
        mine.extend(_prepare(args))
        run_dir, cfg, genotype, name, _, _, state = mine
        return str(run_dir.path), cfg.to_dict(), genotype, name, state

    path, cfg_dict, genotype, name, state = dp.from_main(on_main)
    if dp.is_main:
        run_dir, cfg, genotype, name, data, prediction, state = mine
    else:  # rank 0's run, config and checkpoint; this rank's own data; no writes
        run_dir = FollowerRunDir(path)
        cfg = RetrainConfig.from_dict(cfg_dict, where=f"{path}/config.json")
        prediction = None
        data = load_dataset(cfg.dataset, cfg.data_dir, limit=cfg.data_limit)
    args.resume_hint = f"nas retrain --resume {run_dir.path}"
    log = _stderr if dp.is_main else launch.quiet
    trainer = Retrainer(cfg, genotype, run_dir, data, log=log, dp=dp)
    if state is not None:
        trainer.restore(state)
    parallel = f", {dp.describe()}" if dp.active else ""
    log(f"retraining {name} on {cfg.dataset} ({cfg.preset} preset: {cfg.layers} cells, "
        f"{cfg.init_channels} channels, {cfg.epochs} epochs; {threads_now()} thread(s)"
        f"{parallel}) -> {run_dir.path}")
    if trainer.attack is not None:
        a = trainer.attack
        log(f"adversarial training on {a.name} examples: eps {a.eps:.4g}, {a.steps} "
            f"step(s) of {a.step_size:.4g} (pixel units, range {list(a.pixel_range)})")
    result = trainer.run_all()
    assert result is not None
    if not dp.is_main:
        return 0
    dp.close()  # the other ranks are done; the report and measurement are rank 0's alone
    report = _finish(args, run_dir, cfg, genotype, name, trainer, result, data.spec,
                     prediction)
    if dp.active:
        report["data_parallel"] = {"ranks": dp.world}
        run_dir.write_json(REPORT_FILE, report)
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0



def _finish(args: argparse.Namespace, run_dir: RunDir, cfg: RetrainConfig, genotype: Arch,
            name: str, trainer: Retrainer, result: Any, spec: Any,
            prediction: dict[str, Any] | None) -> dict[str, Any]:
    net = trainer.net.eval()
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    save_state_dict(net, run_dir.path / STATE_DICT)
    onnx_note = export_network_onnx(net, shape, run_dir.path / ONNX_FILE)
    if onnx_note:
        _stderr(f"note: no ONNX export: {onnx_note}")
    files = [GENOTYPE_FILE, STATE_DICT] + ([] if onnx_note else [ONNX_FILE])
    report: dict[str, Any] = {
        "run_dir": str(run_dir.path),
        "genotype_name": name,
        "genotype": genotype.to_dict(),
        "dataset": cfg.dataset,
        "network": {"layout": get_space(cfg.space).layout_name,
                    "channels": cfg.init_channels, "layers": cfg.layers,
                    "input": list(shape), "num_classes": spec.num_classes},
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "test_acc": result.test_acc,
        "test_loss": result.test_loss,
        "test_images": result.test_images,
        **({} if result.holdout is None else {
            "val_loss": result.holdout[0], "val_acc": result.holdout[1],
            "val_images": result.holdout[2]}),
        "train_seconds_this_session": result.seconds_this_session,
        **network_size(net, shape),
        "predicted_latency": prediction,
    }
    if cfg.hardware:
        report["energy"] = modelled_energy(genotype, cfg.hardware)
    if trainer.attack is not None:
        report["adversarial_training"] = trainer.attack.to_dict()
    if args.no_measure:
        report["measured_latency"] = {"skipped": "--no-measure"}
    else:
        _stderr("measuring the trained network on this machine ...")
        report["measured_latency"] = measured_latency_here(
            net, shape, None if onnx_note else run_dir.path / ONNX_FILE)
    if onnx_note:
        report["onnx_note"] = onnx_note
    elif onnx_contents(net):
        report["onnx_holds"] = onnx_contents(net)
    report["files"] = files + [REPORT_FILE, "log.jsonl", "checkpoint.pt", "config.json"]
    run_dir.write_json(REPORT_FILE, report)
    return report
