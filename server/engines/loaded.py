"""What every engine exposes once its model has loaded, and refuses with UNAVAILABLE before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hybrid_assistant.server.engines.types import ModelInfo
from hybrid_assistant.server.errors import Unavailable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class LoadedModel:
    """Mixin: ``tokenizer`` and ``model_info``, set by the engine's loading code."""

    _tokenizer: PreTrainedTokenizerBase | None = None
    _info: ModelInfo | None = None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            raise Unavailable("the model is still loading")
        return self._tokenizer

    @property
    def model_info(self) -> ModelInfo:
        if self._info is None:
            raise Unavailable("the model is still loading")
        return self._info
