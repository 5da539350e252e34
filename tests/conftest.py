"""Every test runs with its own empty user data directory ($HW_NAS_HOME), so no test
reads or writes the developer's ~/.hw-nas, and with OMP_NUM_THREADS set, so `nas` keeps
the thread count the test process has instead of choosing one from the machine's load
(results are bit-identical only at one thread count; tests compare runs bit for bit)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_user_home(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HW_NAS_HOME", str(tmp_path_factory.mktemp("hw-nas-home")))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
