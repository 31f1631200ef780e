"""Configuration precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hybrid_assistant.server.config import load_settings


def test_defaults_work_on_a_fresh_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.listen == "127.0.0.1:50051"
    assert settings.engine == "transformers"
    assert settings.data_dir == tmp_path / "hybrid-assistant"
    assert settings.resolved_adapter_roots == [tmp_path / "hybrid-assistant" / "adapters"]


def test_file_then_env_then_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'listen = "0.0.0.0:7000"\nmax_batch_size = 4\nmax_resident_adapters = 3\n'
        '[[preload_adapters]]\nname = "style"\npath = "style"\n'
    )
    monkeypatch.setenv("HA_MAX_BATCH_SIZE", "8")
    settings = load_settings(config, max_resident_adapters=5, dtype=None)
    assert settings.listen == "0.0.0.0:7000"  # file
    assert settings.max_batch_size == 8  # env beats file
    assert settings.max_resident_adapters == 5  # override beats both
    assert settings.dtype == "float32"  # a None override does not mask anything
    assert settings.preload_adapters[0].name == "style" and settings.preload_adapters[0].pin


def test_bad_values_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="listen must be host:port"):
        load_settings(listen="nohost")
    with pytest.raises(ValidationError, match="max_prompt_tokens"):
        load_settings(max_prompt_tokens=4096, max_total_tokens=2048)
    with pytest.raises(ValidationError, match="tls_cert and tls_key"):
        load_settings(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match=r"unknown_field|Extra inputs"):
        load_settings(unknown_field=1)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_prepack_weights_refuses_what_is_not_a_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).prepack_weights is True
    monkeypatch.setenv("HA_PREPACK_WEIGHTS", "false")
    assert load_settings(None).prepack_weights is False
    for bad in ("maybe", "2", "nan", "x" * 10_000):
        monkeypatch.setenv("HA_PREPACK_WEIGHTS", bad)
        with pytest.raises(ValidationError, match="prepack_weights"):
            load_settings(None)


def test_gemv_max_rows_refuses_what_the_kernel_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(None).gemv_max_rows == 3
    monkeypatch.setenv("HA_GEMV_MAX_ROWS", "0")  # off
    assert load_settings(None).gemv_max_rows == 0
    for bad in ("-1", "5", "2.5", "nan", "three", "9" * 400):
        monkeypatch.setenv("HA_GEMV_MAX_ROWS", bad)
        with pytest.raises(ValidationError, match="gemv_max_rows"):
            load_settings(None)
