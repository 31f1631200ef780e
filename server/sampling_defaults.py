"""The sampling a request gets when it does not choose: resolved once, the same for every engine.

Each field (temperature, top_p) is taken from the first of:

1. the request's own value (applied in :meth:`AssistantCore._sampling`, not here);
2. the operator's setting (``default_temperature`` / ``default_top_p``: TOML, ``HA_*``, flags);
3. the model's ``generation_config.json``, when it names sampling values: ``do_sample: false``
   means greedy (temperature 0); otherwise its ``temperature`` and ``top_p``, each when present
   (``do_sample: true`` alone names no values and falls through);
4. the built-in fallback, :data:`BUILTIN_TEMPERATURE` / :data:`BUILTIN_TOP_P`.

An operator's setting beats the model's file because it is the more specific decision: the
file was written for every deployment of the model, the setting for this one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybrid_assistant.server.config import Settings

log = logging.getLogger(__name__)

BUILTIN_TEMPERATURE = 0.7
"""For a model whose generation_config.json names no sampling values. The raw distribution
(temperature 1.0, top_p 1.0: the OpenAI and vLLM default) is more than small models sustain
(SmolLM2-135M answers with gibberish); 0.6-0.8 with top_p 0.8-0.95 is what chat models' own
configs ask for (Llama 3: 0.6/0.9, Qwen2.5: 0.7/0.8; Ollama's defaults: 0.8/0.9). Greedy, the
transformers default, would make ``seed`` meaningless and loops on long answers."""
BUILTIN_TOP_P = 0.9
"""See :data:`BUILTIN_TEMPERATURE`."""

GENERATION_CONFIG = "generation_config.json"

# Where a default came from, as GetServerInfo.sampling_defaults_source and /v1/models name it.
SOURCE_CONFIG = "config"
SOURCE_GENERATION_CONFIG = "generation_config"
SOURCE_BUILTIN = "built-in"
_ORDER = (SOURCE_CONFIG, SOURCE_GENERATION_CONFIG, SOURCE_BUILTIN)


@dataclass(frozen=True)
class ModelSampling:
    """What a model's generation_config.json says about sampling; None where it says nothing."""

    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True)
class SamplingDefaults:
    """The server's defaults for requests that leave temperature or top_p unset."""

    temperature: float
    top_p: float
    temperature_source: str
    top_p_source: str

    @property
    def source(self) -> str:
        """One source when both fields share it, else both in precedence order: 'config+built-in'."""
        sources = {self.temperature_source, self.top_p_source}
        return "+".join(s for s in _ORDER if s in sources)


def read_model_sampling(model_dir: Path | None) -> ModelSampling:
    """The sampling values in ``model_dir/generation_config.json``; values out of range are ignored."""
    if model_dir is None:
        return ModelSampling()
    path = model_dir / GENERATION_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ModelSampling()
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): its sampling values are not used", path, exc)
        return ModelSampling()
    if not isinstance(data, dict):
        log.warning("%s is not a JSON object: its sampling values are not used", path)
        return ModelSampling()
    if data.get("do_sample") is False:
        return ModelSampling(temperature=0.0, top_p=1.0)  # greedy; top_p means nothing then
    temperature = _number(data, "temperature", path, lambda v: 0 <= v <= 2, "0..2")
    top_p = _number(data, "top_p", path, lambda v: 0 < v <= 1, "(0, 1]")
    return ModelSampling(temperature=temperature, top_p=top_p)


def _number(
    data: dict[str, Any], key: str, path: Path, ok: Callable[[float], bool], expected: str
) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not ok(value):
        log.warning("%s: %s is %r, expected %s; ignored", path, key, value, expected)
        return None
    return float(value)


def resolve_sampling_defaults(settings: Settings, model: ModelSampling) -> SamplingDefaults:
    """Per field: the operator's setting, else the model's file, else the built-in value."""
    temperature, temperature_source = _pick(
        settings.default_temperature, model.temperature, BUILTIN_TEMPERATURE
    )
    top_p, top_p_source = _pick(settings.default_top_p, model.top_p, BUILTIN_TOP_P)
    return SamplingDefaults(temperature, top_p, temperature_source, top_p_source)


def _pick(configured: float | None, from_model: float | None, builtin: float) -> tuple[float, str]:
    if configured is not None:
        return configured, SOURCE_CONFIG
    if from_model is not None:
        return from_model, SOURCE_GENERATION_CONFIG
    return builtin, SOURCE_BUILTIN
