"""``hybrid-assistant demo`` trains and loads only the demo adapters its arms use."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybrid_assistant.server.cli import app
from hybrid_assistant.server.demo import DEMO_ADAPTERS, DEMO_ARMS, demo_adapters


def test_the_default_arms_use_every_demo_adapter() -> None:
    assert demo_adapters(DEMO_ARMS) == DEMO_ADAPTERS


@pytest.mark.parametrize(
    ("arms", "expected"),
    [
        ("base,rag@3,prompt", ()),
        ("adapter:knowledge+rag@3,adapter:style", ("style", "knowledge")),
        ("adapter:raft,adapter:mine+rag", ("raft",)),  # not a demo adapter: the eval refuses it later
    ],
)
def test_only_the_adapters_the_arms_name(arms: str, expected: tuple[str, ...]) -> None:
    assert demo_adapters(arms) == expected


def test_bad_arms_exit_2_before_anything_is_trained(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(
        app, ["demo", "--arms", "base,adapter:", "--data-dir", str(data_dir), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    assert "invalid arms" in result.output
    assert not data_dir.exists()
