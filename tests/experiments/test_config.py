"""Request-log and experiment settings: TOML, environment, and validation at parse time."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from hybrid_assistant.server.cli import app
from hybrid_assistant.server.config import load_settings

TOML = """
[request_log]
retention_days = 90
queue_size = 500

[[experiments]]
name = "style-vs-rag"
description = "style adapter vs retrieval"
arms = [
  { name = "style", adapter = "style", control = true },
  { name = "rag", retrieval = true, top_k = 4, weight = 2 },
]
"""


def test_toml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "ha.toml"
    config.write_text(TOML)
    settings = load_settings(config, data_dir=tmp_path)
    assert settings.request_log.retention_days == 90 and settings.request_log.queue_size == 500
    assert settings.request_log_path == tmp_path / "request-log.sqlite3"
    (experiment,) = settings.experiments
    assert [a.name for a in experiment.arms] == ["style", "rag"] and experiment.arms[1].top_k == 4
    monkeypatch.setenv("HA_REQUEST_LOG__ENABLED", "false")
    monkeypatch.setenv("HA_REQUEST_LOG__RETENTION_DAYS", "7")
    settings = load_settings(config)
    assert not settings.request_log.enabled and settings.request_log.retention_days == 7


def test_a_bad_experiment_fails_when_the_config_is_read(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(TOML.replace("control = true", "control = false").replace("weight = 2", "weight = -2"))
    with pytest.raises(ValidationError) as info:
        load_settings(config)
    assert "exactly one arm must be the control; 0 are" in str(info.value)
    assert "weight of arm 'rag' is -2" in str(info.value)
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and "configuration error" in result.output


def test_config_weights_are_bounded(tmp_path: Path) -> None:
    config = tmp_path / "huge.toml"
    config.write_text(TOML.replace("weight = 2", "weight = 1e308"))
    with pytest.raises(ValidationError) as info:
        load_settings(config)
    assert "weight of arm 'rag' is 1e+308; expected a finite number from 0 to 1000000" in str(info.value)
