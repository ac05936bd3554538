"""Generation tiers prepared beside a first run: nothing starts when HOME has them; a failed preparation is reported
with its log when `up` waits for it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cli.tiers import BackgroundTiers, tiers_installed


def test_a_home_with_every_tier_starts_no_child(tmp_path: Path, real_home: Path) -> None:
    """With the tiers and SmolLM2 (int4) in HOME, there is nothing to prepare: no child process, no output."""
    (tmp_path / "generator").mkdir()
    for built in (real_home / "generator").iterdir():
        (tmp_path / "generator" / built.name).symlink_to(built)
    said = io.StringIO()
    assert tiers_installed(tmp_path, "int4")
    assert BackgroundTiers.start(tmp_path, "int4", said) is None
    assert said.getvalue() == ""
    assert not tiers_installed(tmp_path / "empty", "int4") and not tiers_installed(tmp_path / "empty", "none")


def test_a_failed_preparation_is_raised_with_its_log(tmp_path: Path) -> None:
    """The child (`feedserve tiers`, a real process) runs at the lowest priority with its output in
    HOME/logs/tiers.log; when it fails, waiting for it raises with the exit code and the log's tail."""
    said = io.StringIO()
    tiers = BackgroundTiers.start(tmp_path, "int5", said)  # a precision `feedserve tiers` refuses: exit 2
    assert tiers is not None and "in the background at the lowest priority" in said.getvalue()
    with pytest.raises(RuntimeError, match=r"(?s)exit 2\).*invalid choice: 'int5'") as raised:
        tiers.wait(said)
    assert str(tmp_path / "logs" / "tiers.log") in str(raised.value)
