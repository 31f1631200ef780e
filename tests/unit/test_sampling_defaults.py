"""Server sampling defaults: request > operator setting > generation_config.json > built-in;
and the built-in SmolLM2 cache's generation_config.json gets its authors' values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hybrid_assistant.server.config import load_settings
from hybrid_assistant.server.model_store import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SAMPLING,
    add_recommended_sampling,
    resolve_model,
)
from hybrid_assistant.server.sampling_defaults import (
    BUILTIN_TEMPERATURE,
    BUILTIN_TOP_P,
    ModelSampling,
    read_model_sampling,
    resolve_sampling_defaults,
)


def model_dir(tmp_path: Path, generation_config: dict[str, Any] | str | None) -> Path:
    directory = tmp_path / "model"
    directory.mkdir(exist_ok=True)
    if generation_config is not None:
        text = generation_config if isinstance(generation_config, str) else json.dumps(generation_config)
        (directory / "generation_config.json").write_text(text)
    return directory


# ---------------------------------------------------------------- what the model's file says


@pytest.mark.parametrize(
    ("generation_config", "expected"),
    [
        (None, ModelSampling()),  # no file
        ({"eos_token_id": 2, "bos_token_id": 1}, ModelSampling()),  # no sampling fields
        ({"do_sample": True}, ModelSampling()),  # "sample" names no values: fall through
        ({"do_sample": True, "temperature": 0.2, "top_p": 0.9}, ModelSampling(0.2, 0.9)),
        ({"temperature": 0.6}, ModelSampling(0.6, None)),  # as vLLM: values count without do_sample
        ({"top_p": 0.8}, ModelSampling(None, 0.8)),
        ({"do_sample": False, "temperature": 0.7, "top_p": 0.5}, ModelSampling(0.0, 1.0)),  # greedy
        ({"temperature": 5.0, "top_p": 0.0}, ModelSampling()),  # out of range: ignored
        ({"temperature": "hot", "top_p": True}, ModelSampling()),  # not numbers: ignored
        ('{"temperature": NaN, "top_p": Infinity}', ModelSampling()),  # json reads them: ignored
        ({"temperature": 1}, ModelSampling(1.0, None)),  # JSON integers are numbers
        ("[1, 2]", ModelSampling()),  # not an object
        ("{not json", ModelSampling()),  # unreadable: the model's file is not used, no crash
    ],
)
def test_read_model_sampling(
    tmp_path: Path, generation_config: dict[str, Any] | str | None, expected: ModelSampling
) -> None:
    assert read_model_sampling(model_dir(tmp_path, generation_config)) == expected


def test_no_model_directory_says_nothing() -> None:
    assert read_model_sampling(None) == ModelSampling()


# ---------------------------------------------------------------- precedence


def test_built_in_when_neither_the_operator_nor_the_model_says() -> None:
    defaults = resolve_sampling_defaults(load_settings(), ModelSampling())
    assert (defaults.temperature, defaults.top_p) == (BUILTIN_TEMPERATURE, BUILTIN_TOP_P)
    assert defaults.source == "built-in"
    assert 0 < BUILTIN_TEMPERATURE < 1 and 0 < BUILTIN_TOP_P < 1  # never the raw distribution


def test_the_models_file_beats_the_built_in() -> None:
    defaults = resolve_sampling_defaults(load_settings(), ModelSampling(0.2, 0.9))
    assert (defaults.temperature, defaults.top_p, defaults.source) == (0.2, 0.9, "generation_config")


def test_the_operator_beats_the_models_file_field_by_field() -> None:
    settings = load_settings(default_temperature=0.0)
    defaults = resolve_sampling_defaults(settings, ModelSampling(0.2, 0.9))
    assert (defaults.temperature, defaults.temperature_source) == (0.0, "config")
    assert (defaults.top_p, defaults.top_p_source) == (0.9, "generation_config")
    assert defaults.source == "config+generation_config"
    both = resolve_sampling_defaults(
        load_settings(default_temperature=0.5, default_top_p=0.95), ModelSampling()
    )
    assert (both.temperature, both.top_p, both.source) == (0.5, 0.95, "config")
    mixed = resolve_sampling_defaults(load_settings(), ModelSampling(None, 0.8))
    assert (mixed.temperature, mixed.top_p, mixed.source) == (
        BUILTIN_TEMPERATURE,
        0.8,
        "generation_config+built-in",
    )


def test_settings_from_env_and_toml_and_their_bounds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("default_temperature = 0.3\ndefault_top_p = 0.85\n")
    from_file = load_settings(config)
    assert (from_file.default_temperature, from_file.default_top_p) == (0.3, 0.85)
    monkeypatch.setenv("HA_DEFAULT_TEMPERATURE", "0")
    assert load_settings(config).default_temperature == 0.0  # env beats file; 0 (greedy) is a value
    assert load_settings().default_top_p is None  # unset: the model decides
    bad_values = (
        {"default_temperature": 2.5},
        {"default_temperature": -0.1},
        {"default_top_p": 0.0},
        {"default_temperature": float("nan")},
        {"default_top_p": float("inf")},
    )
    for bad in bad_values:
        with pytest.raises(ValidationError, match="default_"):
            load_settings(**bad)


# ---------------------------------------------------------------- the built-in model's cache


def test_recommended_sampling_is_added_to_a_cache_without_it(tmp_path: Path) -> None:
    directory = model_dir(tmp_path, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2})
    assert add_recommended_sampling(directory)
    data = json.loads((directory / "generation_config.json").read_text())
    assert data == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, **DEFAULT_MODEL_SAMPLING}
    assert DEFAULT_MODEL_SAMPLING == {"do_sample": True, "temperature": 0.2, "top_p": 0.9}
    assert read_model_sampling(directory) == ModelSampling(0.2, 0.9)
    assert not add_recommended_sampling(directory)  # once
    assert [p.name for p in directory.iterdir()] == ["generation_config.json"]  # no staging file left


def test_an_operators_edit_of_the_cache_stays(tmp_path: Path) -> None:
    directory = model_dir(tmp_path, {"eos_token_id": 2, "do_sample": False})
    before = (directory / "generation_config.json").read_text()
    assert not add_recommended_sampling(directory)
    assert (directory / "generation_config.json").read_text() == before


def test_an_unreadable_file_is_left_alone(tmp_path: Path) -> None:
    directory = model_dir(tmp_path, "{broken")
    assert not add_recommended_sampling(directory)
    assert (directory / "generation_config.json").read_text() == "{broken"


def test_a_cache_that_cannot_be_written_still_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = model_dir(tmp_path, {"eos_token_id": 2})

    def refuse(self: Path, target: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "replace", refuse)  # a read-only data dir, even for root
    assert not add_recommended_sampling(directory)
    assert json.loads((directory / "generation_config.json").read_text()) == {"eos_token_id": 2}
    assert [p.name for p in directory.iterdir()] == ["generation_config.json"]  # staging file removed


def test_resolving_an_existing_cache_patches_it(tmp_path: Path) -> None:
    # A cache converted before the recommended values were written: config.json present, so
    # resolve_model does not convert again (no GGUF needed), but it adds the values.
    target = tmp_path / "models" / DEFAULT_MODEL_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    resolved = resolve_model(None, None, tmp_path / "models")
    assert resolved.path == target
    assert read_model_sampling(target) == ModelSampling(0.2, 0.9)


def test_a_configured_model_directory_is_never_written(tmp_path: Path) -> None:
    directory = model_dir(tmp_path, {"eos_token_id": 2})
    (directory / "config.json").write_text("{}")
    resolve_model(directory, None, tmp_path / "models")
    assert json.loads((directory / "generation_config.json").read_text()) == {"eos_token_id": 2}
