"""Latency measurement (docs/methods.md#measuring-latency): timing rules with fake runners,
real backends on tiny
networks, ONNX export, and the machine fingerprint. No test asserts an absolute speed."""

from __future__ import annotations

import importlib.util
import random
import statistics
from collections.abc import Callable, Iterable

import pytest
import torch
from torch import nn

from latency.measure import (
    Runner,
    TimingConfig,
    backend_names,
    export_onnx,
    fingerprint,
    fingerprint_hash,
    measure,
    measure_many,
    prepare,
    stability_check,
    summarize,
)
from latency.measure import backends as backends_module
from latency.measure import onnx_export as onnx_export_module
from search_spaces.errors import InputError
from search_spaces.genotype_library import DARTS_V2
from search_spaces.networks import NetworkCIFAR

FAST = TimingConfig(warmup_runs=3, warmup_s=0.0, runs=15, min_time_s=0.0, max_attempts=2)
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_ONNX = importlib.util.find_spec("onnx") is not None


def fake_runner(
    durations: Iterable[float], calls: list[str] | None = None, label: str = "fake"
) -> Runner:
    """A Runner whose k-th timed run 'takes' the k-th duration (ms); records its calls."""
    it = iter(durations)
    log = calls if calls is not None else []

    def run() -> None:
        log.append(label)

    def timer(fn: Callable[[], None]) -> float:
        fn()
        return next(it)

    return Runner(run, timer=timer, label=label)


def jittered(jitter: float, seed: int = 0) -> Iterable[float]:
    rng = random.Random(seed)
    while True:
        yield 1.0 + rng.uniform(-jitter, jitter)


def conv_net(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 10),
    )


def message_is_one_line(err: pytest.ExceptionInfo[BaseException]) -> None:
    text = str(err.value)
    assert text and "\n" not in text


# --- timing rules, with fake runners ----------------------------------------------------


def test_warmup_and_repeat_minimum_runs_are_respected() -> None:
    calls: list[str] = []
    cfg = TimingConfig(warmup_runs=10, warmup_s=0.0, runs=30, min_time_s=0.0)
    result = measure(fake_runner(iter(lambda: 1.0, None), calls), cfg)
    assert len(calls) == 10 + 30
    assert result.runs == 30 and result.attempts == 1 and not result.noisy
    assert result.median_ms == pytest.approx(1.0) and result.spread == 0.0


def test_time_minimums_are_counted_in_measured_time() -> None:
    calls: list[str] = []
    # 10 ms runs: warm-up needs 0.2 s -> 20 runs (> 10); repeats need 0.5 s -> 50 (> 30)
    cfg = TimingConfig(warmup_runs=10, warmup_s=0.2, runs=30, min_time_s=0.5)
    result = measure(fake_runner(iter(lambda: 10.0, None), calls), cfg)
    assert result.runs == 50
    assert len(calls) == 20 + 50


def test_jittery_runs_are_remeasured_and_flagged_noisy() -> None:
    calls: list[str] = []
    cfg = TimingConfig(warmup_runs=5, warmup_s=0.0, runs=40, min_time_s=0.0, max_attempts=3)
    result = measure(fake_runner(jittered(0.2), calls), cfg)
    assert result.attempts == 3 and result.noisy
    assert result.spread > cfg.threshold and result.cv > 0.05
    assert len(calls) == 5 + 3 * 40


def test_steady_runs_are_measured_once_and_not_noisy() -> None:
    cfg = TimingConfig(warmup_runs=5, warmup_s=0.0, runs=40, min_time_s=0.0, max_attempts=3)
    result = measure(fake_runner(jittered(0.005)), cfg)
    assert result.attempts == 1 and not result.noisy
    assert result.median_ms == pytest.approx(1.0, abs=0.01)


def test_a_noisy_attempt_is_replaced_by_a_steady_one() -> None:
    cfg = TimingConfig(warmup_runs=0, warmup_s=0.0, runs=40, min_time_s=0.0, max_attempts=3)
    noisy = jittered(0.3)
    durations = [next(noisy) for _ in range(40)] + [2.0] * 40
    result = measure(fake_runner(durations), cfg)
    assert result.attempts == 2 and not result.noisy
    assert result.median_ms == 2.0 and result.spread == 0.0


def test_summarize_quartiles() -> None:
    stats = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert stats.median_ms == 3.0 and stats.iqr_ms == 2.0
    assert stats.spread == pytest.approx(2.0 / 3.0)
    assert stats.cv == pytest.approx(statistics.pstdev([1, 2, 3, 4, 5]) / 3.0)


def test_interleaving_alternates_architectures_in_rounds() -> None:
    calls: list[str] = []
    runners = [fake_runner(iter(lambda: 1.0, None), calls, name) for name in "ABC"]
    cfg = TimingConfig(warmup_runs=0, warmup_s=0.0, runs=4, min_time_s=0.0)
    results = measure_many(runners, rounds=4, config=cfg)
    assert "".join(calls) == "ABC" * 4
    assert [r.label for r in results] == ["A", "B", "C"]
    assert all(r.runs == 4 and r.attempts == 1 for r in results)

    calls.clear()
    cfg = TimingConfig(warmup_runs=2, warmup_s=0.0, runs=6, min_time_s=0.0)
    measure_many(runners, rounds=3, config=cfg)
    assert "".join(calls) == "AABBCC" + "AABBCC" * 3  # warm-ups, then blocks of 2 per round


def test_interleaving_remeasures_only_the_noisy_runner() -> None:
    calls: list[str] = []
    steady = fake_runner(iter(lambda: 1.0, None), calls, "A")
    noisy = fake_runner(jittered(0.3), calls, "B")
    cfg = TimingConfig(warmup_runs=0, warmup_s=0.0, runs=20, min_time_s=0.0, max_attempts=3)
    a, b = measure_many([steady, noisy], rounds=5, config=cfg)
    assert (a.attempts, a.noisy) == (1, False)
    assert (b.attempts, b.noisy) == (3, True)
    assert calls.count("A") == 20 and calls.count("B") == 60


def test_interleaving_blocks_reach_the_time_minimum() -> None:
    runner = fake_runner(iter(lambda: 10.0, None))
    cfg = TimingConfig(warmup_runs=5, warmup_s=0.0, runs=10, min_time_s=0.5)
    (result,) = measure_many([runner], rounds=5, config=cfg)
    assert result.runs >= 50


def test_stability_check_reports_drift() -> None:
    durations = [1.0] * 30 + [1.2] * 30
    cfg = TimingConfig(warmup_runs=0, warmup_s=0.0, runs=30, min_time_s=0.0)
    with stability_check(fake_runner(durations), cfg) as check:
        pass
    report = check.report
    assert report is not None
    assert report.relative_diff == pytest.approx(0.2)
    assert not report.within_threshold and "DRIFTED" in report.summary()

    with stability_check(fake_runner(iter(lambda: 1.0, None)), cfg) as check:
        pass
    assert check.report is not None and check.report.within_threshold
    assert check.report.to_dict()["within_threshold"] is True


def test_timing_config_rejects_nonsense() -> None:
    with pytest.raises(InputError):
        TimingConfig(runs=0)
    with pytest.raises(InputError):
        measure_many([], rounds=0)


# --- real backends ----------------------------------------------------------------------


def test_torch_cpu_measurement_of_a_tiny_net() -> None:
    net = conv_net(8)
    net.train()
    before = torch.get_num_threads()
    runner = prepare("torch-cpu", net, (3, 16, 16), batch_size=2, threads=1)
    result = measure(runner, FAST)
    assert result.median_ms > 0 and result.spread >= 0 and result.cv >= 0
    assert result.runs >= FAST.runs and 1 <= result.attempts <= FAST.max_attempts
    assert (result.backend, result.threads, result.batch_size, result.precision) == (
        "torch-cpu",
        1,
        2,
        "fp32",
    )
    assert result.input_shape == (3, 16, 16)
    assert torch.get_num_threads() == before  # thread setting restored
    assert net.training  # the caller's network is not switched to eval
    runner()  # runs once outside the timing loop too


def test_a_larger_network_is_slower() -> None:
    small = prepare("torch-cpu", conv_net(8), (3, 32, 32), threads=1, label="small")
    large = prepare("torch-cpu", conv_net(32), (3, 32, 32), threads=1, label="large")
    cfg = TimingConfig(warmup_runs=5, warmup_s=0.0, runs=15, min_time_s=0.0, max_attempts=1)
    medians = [measure_many([small, large], rounds=5, config=cfg) for _ in range(3)]
    small_ms = statistics.median(m[0].median_ms for m in medians)
    large_ms = statistics.median(m[1].median_ms for m in medians)
    assert large_ms > 1.5 * small_ms  # 16x the multiply-adds; a generous margin


def test_unknown_backend_is_a_one_line_error() -> None:
    with pytest.raises(InputError, match="unknown backend 'tpu'") as err:
        prepare("tpu", conv_net(4), (3, 8, 8))
    message_is_one_line(err)
    for name in backend_names():
        assert name in str(err.value)


def test_unavailable_cuda_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="'torch-cuda' is not available") as err:
        prepare("torch-cuda", conv_net(4), (3, 8, 8))
    message_is_one_line(err)


def test_missing_onnxruntime_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends_module, "has_module", lambda name: False)
    with pytest.raises(InputError, match=r"hw-nas\[onnx\]") as err:
        prepare("onnxruntime-cpu", conv_net(4), (3, 8, 8))
    message_is_one_line(err)
    monkeypatch.setattr(onnx_export_module, "has_module", lambda name: False)
    with pytest.raises(InputError, match=r"pip install 'hw-nas\[onnx\]'") as err:
        export_onnx(conv_net(4), (3, 8, 8), "unused.onnx")
    message_is_one_line(err)


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(InputError, match="precision 'int3'"):
        prepare("torch-cpu", conv_net(4), (3, 8, 8), precision="int3")
    with pytest.raises(InputError, match="batch size"):
        prepare("torch-cpu", conv_net(4), (3, 8, 8), batch_size=0)
    with pytest.raises(InputError, match="input shape"):
        prepare("torch-cpu", conv_net(4), (3, -8, 8))
    with pytest.raises(InputError, match="not a file"):
        prepare("torch-cpu", "net.onnx", (3, 8, 8))


# --- ONNX -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def darts_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, str]:
    if not (HAS_ORT and HAS_ONNX):
        pytest.skip("onnx / onnxruntime not installed")
    torch.manual_seed(0)
    net = NetworkCIFAR(DARTS_V2, C=8, layers=5, in_channels=1)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("onnx") / "darts.onnx"
    export_onnx(net, (1, 8, 8), path, dynamic_batch=True)
    assert net.training  # export leaves the network's mode alone
    return net, str(path)


def test_onnxruntime_matches_pytorch_and_is_timed(darts_onnx: tuple[nn.Module, str]) -> None:
    import onnxruntime as ort

    net, path = darts_onnx
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    x = torch.randn(3, 1, 8, 8)
    (logits,) = session.run(None, {"input": x.numpy()})
    net.eval()
    try:
        with torch.inference_mode():
            expected, aux = net(x)
    finally:
        net.train()
    assert aux is None and logits.shape == (3, 10)
    assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)

    runner = prepare("onnxruntime-cpu", path, (1, 8, 8), batch_size=2, threads=1)
    result = measure(runner, FAST)
    assert result.backend == "onnxruntime-cpu" and result.median_ms > 0 and result.batch_size == 2


def test_onnxruntime_backend_exports_a_network_itself() -> None:
    if not HAS_ORT:
        pytest.skip("onnxruntime not installed")
    runner = prepare("onnxruntime-cpu", conv_net(4), (3, 8, 8), threads=1)
    result = measure(runner, FAST)
    assert result.median_ms > 0 and result.threads == 1


def test_onnx_file_of_the_wrong_shape_is_refused(darts_onnx: tuple[nn.Module, str]) -> None:
    with pytest.raises(InputError, match="takes input") as err:
        prepare("onnxruntime-cpu", darts_onnx[1], (3, 32, 32))
    message_is_one_line(err)


def test_failed_export_keeps_an_existing_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not HAS_ONNX:
        pytest.skip("onnx not installed")

    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.svdvals(x)  # no ONNX operator for it

    target = tmp_path / "model.onnx"
    target.write_text("keep me")
    with pytest.raises(InputError, match="cannot export Unexportable") as err:
        export_onnx(Unexportable(), (3, 8, 8), target, dynamo=False)
    message_is_one_line(err)
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# --- fingerprint ------------------------------------------------------------------------


def test_fingerprint_keys_and_stable_hash() -> None:
    first, second = fingerprint(), fingerprint()
    expected = {
        "cpu_model",
        "cpu_count",
        "machine",
        "os",
        "python",
        "torch",
        "torch_build",
        "onnxruntime",
        "gpus",
        "hostname_hash",
        "torch_threads",
        "hash",
    }
    assert expected <= set(first)
    assert first["hash"] == second["hash"] and len(first["hash"]) == 12
    assert fingerprint_hash(first) == first["hash"]
    import socket

    assert socket.gethostname() not in str(first)
    assert fingerprint_hash({**first, "torch_threads": 99}) == first["hash"]
    assert fingerprint_hash({**first, "cpu_model": "other"}) != first["hash"]
