"""Every test runs with its own empty user data directory ($HW_NAS_HOME), so no test
reads or writes the developer's ~/.hw-nas."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_user_home(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HW_NAS_HOME", str(tmp_path_factory.mktemp("hw-nas-home")))
