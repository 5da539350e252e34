"""Data-parallel search and retraining on torch.distributed (gloo, two CPU processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas.cli.main import main
from nas.distributed import launch
from nas.distributed.context import SINGLE, DataParallel, digest
from nas.distributed.launch import without_nproc
from search_spaces.errors import InputError

HERE = Path(__file__).parent
TINY_SEARCH = ["search", "--space", "darts", "--channels", "4", "--layers", "3",
               "--limit", "128", "--batch-size", "32"]
TINY_RETRAIN = ["retrain", "--genotype", "DARTS_V2", "--channels", "4", "--layers", "3",
                "--limit", "128", "--batch-size", "32", "--no-measure"]


def torchrun(nproc: int, *args: str) -> list[str]:
    """The launch `--nproc` makes, for tests that start ranks themselves."""
    return [*launch.torchrun_argv(nproc), *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e.setdefault("HOME", str(HERE))  # no user profiles / predictors needed
    launch.pin_to_loopback(e)
    return e


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def kill_processes_naming(text: str, timeout_s: float = 30.0) -> None:
    """SIGKILL every process whose command line contains `text`, and wait until none is
    left."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and int(proc.name) != os.getpid():
                found.append(int(proc.name))
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"processes naming {text} survived SIGKILL")


def checkpointed_epochs(run: Path) -> int:
    try:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
    except (OSError, RuntimeError, EOFError):
        return 0
    return int(state["epoch"])


# ---------------------------------------------------------------- unit level


def test_shard_scales_make_the_mean_of_rank_gradients_the_global_gradient() -> None:
    x = torch.arange(7.0).reshape(7, 1)
    y = torch.arange(7)
    w = torch.tensor([0.3], requires_grad=True)

    def loss(xs: torch.Tensor) -> torch.Tensor:
        return ((xs * w) ** 2).mean()

    (whole,) = torch.autograd.grad(loss(x), w)
    parts = []
    for rank in range(3):
        xs, ys, scale = DataParallel(rank, 3).shard(x, y)
        assert torch.equal(ys, y.tensor_split(3)[rank])  # contiguous slices: 3, 2, 2
        parts.append(torch.autograd.grad(loss(xs) * scale, w)[0])
    assert torch.allclose(sum(parts) / 3, whole, rtol=1e-6)
    assert SINGLE.shard(x, y)[2] == 1.0 and SINGLE.shard(x, y)[0] is x


def test_a_batch_smaller_than_the_ranks_is_a_one_line_error() -> None:
    with pytest.raises(InputError, match="cannot be split over 4 processes"):
        DataParallel(0, 4).shard(torch.zeros(3, 1), torch.zeros(3))


def test_digest_sees_one_bit_and_names() -> None:
    t = torch.tensor([1.0, 2.0])
    u = t.clone()
    u.view(torch.int32)[0] ^= 1  # the last mantissa bit of the first element
    assert digest([("a", t)]) == digest([("a", t.clone())])
    assert digest([("a", t)]) != digest([("a", u)])
    assert digest([("a", t)]) != digest([("b", t)])


def test_nproc_is_taken_out_of_the_relaunched_command() -> None:
    argv = ["--threads", "1", "search", "--nproc", "2", "--epochs", "1", "--nproc=3"]
    assert without_nproc(argv) == ["--threads", "1", "search", "--epochs", "1"]


def test_nproc_launches_torchrun_on_the_loopback_address(monkeypatch, capsys) -> None:
    """One machine needs no name lookups: the rendezvous is published as 127.0.0.1 and
    gloo uses the loopback interface, unless the user named one; a failed launch says so
    in one line after the ranks' own errors."""
    calls: list[tuple[list[str], dict[str, str]]] = []

    def call(cmd: list[str], env: dict[str, str]) -> int:
        calls.append((cmd, env))
        return 3

    monkeypatch.setattr(launch.subprocess, "call", call)
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    assert main(["--threads", "1", *TINY_SEARCH, "--nproc", "2"]) == 3
    cmd, env_used = calls[0]
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone",
                        "--local-addr=127.0.0.1", "--nproc_per_node=2"]
    assert cmd[6:] == ["-m", "nas", "--threads", "1", *TINY_SEARCH]
    assert env_used.get("GLOO_SOCKET_IFNAME") == ("lo" if Path("/sys/class/net/lo").exists()
                                              else None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: the data-parallel run failed (torchrun exited with 3); each "
                       "rank's own error is above")

    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth7")
    assert main(["--threads", "1", *TINY_SEARCH, "--nproc", "2"]) == 3
    assert calls[1][1]["GLOO_SOCKET_IFNAME"] == "eth7"


def test_nproc_below_one_is_a_one_line_error(capsys) -> None:
    assert main([*TINY_SEARCH, "--nproc", "0"]) == 2
    err = capsys.readouterr().err
    assert "--nproc must be at least 1" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- two processes


def test_two_ranks_compute_what_one_process_computes_without_batch_norm(tmp_path) -> None:
    """The real driver, first and second order and the log-normal sampler: ranks end
    bit-identical, and equal to one process on the global batch up to float order."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    worker = str(HERE / "dp_equivalence_worker.py")
    subprocess.run([sys.executable, worker, str(one)], check=True, env=env(),
                   capture_output=True)
    done = subprocess.run(torchrun(2, worker, str(two)), env=env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for variant in ("first_order", "second_order", "lognormal"):
        alone = torch.load(one / f"{variant}-rank0.pt", weights_only=True)
        rank0 = torch.load(two / f"{variant}-rank0.pt", weights_only=True)
        rank1 = torch.load(two / f"{variant}-rank1.pt", weights_only=True)
        for name, value in rank0["model"].items():
            assert torch.equal(value, rank1["model"][name]), (variant, name)
            assert torch.allclose(value, alone["model"][name], rtol=1e-4, atol=1e-6), (
                variant, name, (value - alone["model"][name]).abs().max())
        # the architecture moved, so agreement is not agreement of initial values
        arch = [n for n in rank0["model"] if n.startswith("arch.")]
        assert arch and any(rank0["model"][n].abs().max() > 1e-2 for n in arch)
        assert rank0["genotype"] == rank1["genotype"] == alone["genotype"], variant


def test_two_process_search_and_retrain_keep_identical_replicas(tmp_path, capfd) -> None:
    search = tmp_path / "search"
    code = main(["--threads", "1", *TINY_SEARCH, "--epochs", "2", "--nproc", "2",
                 "--out", str(search), "--json"])
    out, err = capfd.readouterr()
    assert code == 0, err[-4000:]  # what the ranks said, should a launch ever fail
    summary = json.loads(out)  # one JSON object: rank 1 printed nothing
    assert summary["data_parallel"] == {"ranks": 2}
    logs = records(search)
    assert len(logs) == 2  # rank 0 alone wrote the log
    assert all(r["data_parallel"]["ranks"] == 2 and r["data_parallel"]["replicas_identical"]
               for r in logs)
    assert json.loads((search / "genotype.json").read_text()) == summary["genotype"]

    retrain = tmp_path / "retrain"
    code = main(["--threads", "1", *TINY_RETRAIN, "--epochs", "2", "--holdout", "16",
                 "--nproc", "2", "--out", str(retrain), "--json"])
    out, err = capfd.readouterr()
    assert code == 0, err[-4000:]
    report = json.loads(out)
    assert report["data_parallel"] == {"ranks": 2}
    assert report["val_images"] == 16 and report["test_images"] > 0
    assert [r["data_parallel"]["replicas_identical"] for r in records(retrain)] == [True, True]
    assert json.loads((retrain / "report.json").read_text())["test_acc"] == report["test_acc"]


def test_killed_two_process_search_resumes_in_one_process(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        torchrun(2, "-m", "nas", *TINY_SEARCH, "--epochs", "3", "--out", str(run)),
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpointed_epochs(run) >= 1:  # killed after epoch 1's checkpoint
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    # a machine going down: torchrun and its ranks at once (torchrun starts the ranks in
    # sessions of their own, so killing its process group would not reach them)
    kill_processes_naming(str(run))
    proc.wait()
    assert 1 <= len(records(run)) < 3

    code = main(["search", "--resume", str(run), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and "data_parallel" not in summary
    logs = records(run)
    assert [r["epoch"] for r in logs] == [0, 1, 2]
    assert "data_parallel" in logs[0] and "data_parallel" not in logs[-1]
