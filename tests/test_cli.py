"""The `nas` command as a user meets it: output formats, errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from latency.hardware import load_profile
from nas.cli.main import main
from search_spaces.genotype_library import DARTS_V2


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_is_one_object_with_published_figures(capsys) -> None:
    code, out, err = run_cli(["info", "PDARTS", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["params"] == 3_433_798 and data["macs"] == 532_174_464


def test_info_reads_a_darts_literal_file_and_imagenet_layout(tmp_path, capsys) -> None:
    f = tmp_path / "cell.py"
    f.write_text(f"MY_CELL = {DARTS_V2}\n")
    code, out, _ = run_cli(["info", str(f), "--dataset", "imagenet", "--json"], capsys)
    assert code == 0 and json.loads(out)["params"] == 4_718_752
    code, out, _ = run_cli(["info", "DARTS_V2", "--dataset", "digits", "--channels", "8",
                            "--layers", "5"], capsys)
    # the figures of the network built directly: 8 channels, 5 cells, 1 x 8 x 8 digits
    from search_spaces.complexity import count_macs, count_parameters
    from search_spaces.networks import NetworkCIFAR

    net = NetworkCIFAR(DARTS_V2, 8, 5, 10, auxiliary=False, in_channels=1).eval()
    assert (count_parameters(net), count_macs(net, (1, 8, 8))) == (36_586, 435_584)
    assert code == 0 and "parameters (auxiliary head excluded): 36,586 (0.04M)" in out
    assert "multiply-accumulates per image:       435,584 (0.4M)" in out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["info", "NOT_A_GENOTYPE"], "unknown genotype"),
        (["search", "--space", "enas"], "invalid choice"),
        (["search", "--hardware", "abacus"], "unknown hardware"),
        (["search", "--dataset", "cifar10"], "--data-dir"),
        (["search", "--dataset", "cifar10", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["search", "--epochs", "0"], "--epochs"),
        (["search", "--resume", "/nonexistent/run"], "cannot resume"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_2(args, needle, capsys, tmp_path,
                                                   monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if "invalid choice" in needle else _nullcontext() as exc:
        code = main(args)
    if "invalid choice" in needle:
        code = exc.value.code
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error:"), err
    assert needle in err
    assert not (tmp_path / "results").exists()  # nothing written on bad input


def test_bad_genotype_files(tmp_path, capsys) -> None:
    bad_op = tmp_path / "bad_op.json"
    g = DARTS_V2.to_dict()
    g["normal"][0] = ["sep_conv_9x9", 0]
    bad_op.write_text(json.dumps(g))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path, needle in [(bad_op, "sep_conv_9x9"), (broken, str(broken))]:
        code, out, err = run_cli(["info", str(path)], capsys)
        assert code == 2 and needle in err and err.count("\n") == 1


def test_existing_output_directory_is_not_touched(tmp_path, capsys) -> None:
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "genotype.json").write_text("precious")
    code, _, err = run_cli(["search", "--out", str(out_dir), "--epochs", "1"], capsys)
    assert code == 2 and "not empty" in err
    assert (out_dir / "genotype.json").read_text() == "precious"


def test_search_cli_end_to_end_json(tmp_path, capsys) -> None:
    code, out, err = run_cli(
        ["search", "--space", "darts", "--hardware", "p100", "--epochs", "1", "--channels", "4",
         "--layers", "3", "--limit", "64", "--out", str(tmp_path / "r"), "--json"],
        capsys,
    )
    assert code == 0
    summary = json.loads(out)  # stdout holds exactly one JSON object
    assert summary["hardware"] == "p100"
    assert summary == {**json.loads((tmp_path / "r" / "summary.json").read_text()),
                       "run_dir": str(tmp_path / "r")}
    # the saved genotype is the one of the last (only) epoch's log line, and a valid cell
    from search_spaces.genotype import Genotype
    from search_spaces.ops import DARTS_PRIMITIVES

    saved = json.loads((tmp_path / "r" / "genotype.json").read_text())
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert len(log) == summary["epochs_logged"] == 1
    assert saved == summary["genotype"] == log[-1]["genotype"]
    assert summary["final_val_acc"] == log[-1]["val_acc"]
    Genotype.from_dict(saved).validate(DARTS_PRIMITIVES)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["hardware_profile"]["source"] == "simulated"
    assert config["hardware_profile"] == load_profile("p100").to_dict()


def test_console_script_help() -> None:
    for cmd in (["--help"], ["search", "--help"], ["info", "--help"]):
        res = subprocess.run([sys.executable, "-m", "nas.cli.main", *cmd],
                             capture_output=True, text=True)
        assert res.returncode == 0 and "usage" in res.stdout


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_threads_option_sets_torch_threads_and_rejects_zero(capsys) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        code, out, _ = run_cli(["--threads", "1", "info", "DARTS_V2", "--json"], capsys)
        # DARTS_V2 at the CIFAR-10 default (36 channels, 20 cells): 3,349,342 parameters
        assert code == 0 and torch.get_num_threads() == 1
        assert json.loads(out)["params"] == 3_349_342
        code, _, err = run_cli(["--threads", "0", "info", "DARTS_V2"], capsys)
        assert code == 2 and err.startswith("error:") and "--threads" in err
    finally:
        torch.set_num_threads(before)
