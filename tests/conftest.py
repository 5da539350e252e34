"""Every test runs with its own empty user data directory ($HW_NAS_HOME), so no test
reads or writes the developer's ~/.hw-nas, and with OMP_NUM_THREADS set, so `nas` keeps
the thread count the test process has instead of choosing one from the machine's load
(results are bit-identical only at one thread count; tests compare runs bit for bit)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nas.run_dir import RunDir

KillAt = Callable[[pytest.MonkeyPatch, int], None]


@pytest.fixture(autouse=True)
def _private_user_home(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HW_NAS_HOME", str(tmp_path_factory.mktemp("hw-nas-home")))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _kill_at_checkpoint(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """A kill during the n-th checkpoint save (the first save is the one before epoch 1):
    after that epoch's log lines were written, before its checkpoint."""
    real = RunDir.save_checkpoint
    calls = {"n": 0}

    def save(self: RunDir, state: dict) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        real(self, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", save)


@pytest.fixture
def kill_at_checkpoint() -> KillAt:
    """`kill_at_checkpoint(monkeypatch, n)`: what the resume tests kill a run with."""
    return _kill_at_checkpoint
