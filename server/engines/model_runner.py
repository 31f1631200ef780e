"""One Hugging Face causal LM, its row cache and its LoRA bank: forward passes for the scheduler.

Only the scheduler thread calls this; nothing here is thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from hybrid_assistant.adapters.peft_format import BaseModelSpec
from hybrid_assistant.server import metrics
from hybrid_assistant.server.engines import row_gemv
from hybrid_assistant.server.engines.kv_cache import SlotKVCache
from hybrid_assistant.server.engines.lean_forward import LeanDecoder, Segment, unsupported
from hybrid_assistant.server.engines.lora_bank import LoraBank
from hybrid_assistant.server.engines.packed_linear import Linear, packed, plain, unavailable
from hybrid_assistant.server.engines.prefix_cache import Block, PrefixCache
from hybrid_assistant.server.engines.types import ContinuationScore

log = logging.getLogger(__name__)

# Continuation tokens in one Score pass: bounds its attention mask and its logits (64 options of
# ~2,000 tokens each would otherwise be one 128k x 130k mask and 25 GB of logits).
SCORE_TOKENS_PER_PASS = 512


class ModelRunner:
    def __init__(
        self,
        model_dir: Path,
        *,
        dtype: torch.dtype,
        max_rows: int,
        max_tokens: int,
        model_name: str,
        aliases: set[str],
        prefix_cache_bytes: int = 0,
        prefix_block_tokens: int = 16,
        lean: bool = True,
        prepack: bool = True,
        gemv_max_rows: int = 3,
    ) -> None:
        self.dtype = dtype
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
        model.eval()
        model.requires_grad_(False)
        self.model = model
        # The decoder stack and the LM head, called separately so logits are computed only
        # for the positions that need them (one per row, not one per prompt token).
        self.decoder = model.base_model
        self.lm_head = model.get_output_embeddings()
        self.base_spec = BaseModelSpec.from_model(model, model_name, aliases)
        self.bank = LoraBank(dtype)
        LoraBank.wrap(model, self.bank, sorted(self.base_spec.linear_shapes))
        # The lean forward (fused projections, no module dispatch) where the model allows it;
        # Hugging Face's modules otherwise, and always for Score.
        # The lean forward's products and the LM head on weights reordered once for oneDNN where
        # torch allows it (packed_linear.py says why); F.linear otherwise.
        no_prepack = unavailable(dtype) if prepack else "turned off (prepack_weights=false)"
        if no_prepack is not None:
            log.info("prepacked weights not used: %s", no_prepack)
        self.prepacked = no_prepack is None
        wide: Callable[[torch.Tensor], Linear] = (
            (lambda weight: packed(weight, rows_hint=max_rows)) if self.prepacked else plain
        )
        # Batches of 1-3 rows on the project's own kernel, which streams the plain weights at
        # memory bandwidth (row_gemv.py says why); larger ones on the products above.
        no_gemv = row_gemv.unavailable(dtype) if gemv_max_rows > 0 else "turned off (gemv_max_rows=0)"
        if no_gemv is not None:
            log.info("row GEMV kernel not used: %s", no_gemv)
        self.gemv_rows = 0 if no_gemv is not None else min(gemv_max_rows, row_gemv.MAX_ROWS)

        def make_linear(weight: torch.Tensor) -> Linear:
            other = wide(weight)
            return row_gemv.with_row_gemv(weight, other, self.gemv_rows) if self.gemv_rows else other

        self.lean: LeanDecoder | None = None
        why_not = unsupported(model) if lean else "turned off (forward_path=transformers)"
        if why_not is None:
            self.lean = LeanDecoder(model, self.bank, make_linear)
        else:
            log.info("lean forward not used: %s; running the Hugging Face modules", why_not)
        # After the lean forward, which copies weights out of the file's mapping.
        head = self.lm_head
        plain_head = isinstance(head, torch.nn.Linear) and head.bias is None and head.weight.is_contiguous()
        fast_head = (self.prepacked or self.gemv_rows > 0) and plain_head
        self.head: Linear = make_linear(head.weight) if fast_head else head
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache = SlotKVCache(
            layers=config.num_hidden_layers,
            rows=max_rows,
            kv_heads=config.num_key_value_heads,
            head_dim=head_dim,
            max_tokens=max_tokens,
            dtype=dtype,
        )
        self.prefix = PrefixCache(block_tokens=prefix_block_tokens, budget_bytes=prefix_cache_bytes)
        self.vocab_size = int(config.vocab_size)
        self.context_limit = int(getattr(config, "max_position_embeddings", max_tokens))

    def remove_adapter(self, uid: int) -> None:
        """Free an adapter's weights and the prefix blocks computed under it."""
        self.bank.remove(uid)
        self.prefix.drop_adapter(uid)

    def _count_lookup(self, reused: int, prompt: int) -> None:
        metrics.PREFIX_CACHE_TOKENS.labels(result="hit").inc(reused)
        metrics.PREFIX_CACHE_TOKENS.labels(result="miss").inc(prompt - reused)

    def restore_prefix(self, row: int, adapter_uid: int, prompt_ids: Sequence[int]) -> int:
        """Copy the longest cached prefix of the prompt into ``row``; returns how many tokens it covers."""
        blocks = self.prefix.lookup(adapter_uid, prompt_ids)
        if self.prefix.enabled:
            self._count_lookup(len(blocks) * self.prefix.block_tokens, len(prompt_ids))
        if not blocks:
            return 0
        keys, values = _joined(blocks)
        n = keys.shape[2]
        self.cache.ensure_capacity(n)
        for layer in range(self.cache.layers):
            self.cache.keys[layer][row, :, :n] = keys[layer]
            self.cache.values[layer][row, :, :n] = values[layer]
        return n

    def save_prefix(self, row: int, adapter_uid: int, prompt_ids: Sequence[int]) -> None:
        """Keep the full blocks of a prompt that ``row`` has just read, for the next request."""
        layers = range(self.cache.layers)
        self._save_blocks(
            adapter_uid,
            prompt_ids,
            lambda start, end: (
                torch.stack([self.cache.keys[i][row, :, start:end] for i in layers]),
                torch.stack([self.cache.values[i][row, :, start:end] for i in layers]),
            ),
        )

    def _save_blocks(
        self,
        adapter_uid: int,
        prompt_ids: Sequence[int],
        read: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        missing = self.prefix.missing_blocks(adapter_uid, prompt_ids)
        if not missing:
            return
        size = self.prefix.block_tokens
        first = missing[0][0] * size
        # One read of the span, then a copy per block: a block must not keep the span alive.
        keys, values = read(first, (missing[-1][0] + 1) * size)
        for index, key in missing:
            start = index * size - first
            self.prefix.insert(
                key,
                adapter_uid,
                prompt_ids[index * size : (index + 1) * size],
                keys[:, :, start : start + size].clone(),
                values[:, :, start : start + size].clone(),
            )
        self.prefix.touch_chain([key for _, key in missing])
        metrics.PREFIX_CACHE_BYTES.set(self.prefix.stats.bytes)

    @torch.inference_mode()
    def forward(
        self,
        row_start: int,
        tokens: torch.Tensor,
        starts: torch.Tensor,
        lengths: torch.Tensor,
        row_uids: Sequence[int],
        logits_rows: Sequence[int],
    ) -> torch.Tensor:
        """Append ``tokens`` ``(rows, T)`` (right-padded to ``lengths``) after ``starts`` cached tokens.

        Returns float32 logits ``(len(logits_rows), vocab)`` at each listed row's last real token.
        """
        new_tokens = tokens.shape[1]
        self.cache.begin(row_start, starts, new_tokens)
        mask = SlotKVCache.attention_mask(starts, lengths, new_tokens)
        positions = starts[:, None] + torch.arange(new_tokens)[None, :]
        with self.bank.batch(row_uids, new_tokens):
            if self.lean is not None:
                states = self.lean(tokens, positions, mask, self.cache)
            else:
                states = self.decoder(
                    input_ids=tokens,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=self.cache,
                    use_cache=True,
                ).last_hidden_state
        if not logits_rows:
            return torch.empty(0, self.vocab_size)
        index = torch.tensor(list(logits_rows), dtype=torch.int64)
        hidden = states[index, lengths[index] - 1]
        return self.head(hidden).float()

    @torch.inference_mode()
    def prefill(
        self,
        rows: Sequence[int],
        starts: Sequence[int],
        chunks: Sequence[Sequence[int]],
        row_uids: Sequence[int],
        logits_for: Sequence[int],
    ) -> torch.Tensor:
        """Append chunk ``i`` of prompt tokens to cache row ``rows[i]``, which holds ``starts[i]``.

        Returns float32 logits ``(len(logits_for), vocab)`` at the last token of each listed chunk.
        The lean forward packs the chunks end to end, so no product runs on padding (a chunk
        budget split 88 + 424 costs 512 tokens, not 2 x 424); Hugging Face's modules take them
        right-padded, which needs consecutive rows (the scheduler's prefill rows are).
        """
        lengths = [len(chunk) for chunk in chunks]
        if self.lean is None:
            if list(rows) != list(range(rows[0], rows[0] + len(rows))):
                raise ValueError(f"padded prefill needs consecutive rows, got {list(rows)}")
            tokens = torch.zeros(len(chunks), max(lengths), dtype=torch.int64)
            for i, chunk in enumerate(chunks):
                tokens[i, : len(chunk)] = torch.tensor(list(chunk), dtype=torch.int64)
            return self.forward(
                rows[0], tokens, torch.tensor(list(starts)), torch.tensor(lengths), row_uids, logits_for
            )
        segments = [Segment(start, length) for start, length in zip(starts, lengths, strict=True)]
        tokens = torch.tensor([token for chunk in chunks for token in chunk], dtype=torch.int64)
        with self.bank.batch(row_uids, lengths):
            hidden = self.lean.packed(tokens, segments, self.cache.rows_for(rows, segments))
        if not logits_for:
            return torch.empty(0, self.vocab_size)
        ends = torch.tensor(lengths).cumsum(0) - 1
        return self.head(hidden[ends[list(logits_for)]]).float()

    def score(
        self, prompt_ids: list[int], continuations: Sequence[list[int]], adapter_uid: int
    ) -> list[ContinuationScore]:
        """Sum of log-probabilities of each continuation's tokens after the prompt (all passes)."""
        *_, result = self.score_passes(prompt_ids, continuations, adapter_uid)
        assert result is not None
        return result

    @torch.inference_mode()
    def score_passes(
        self, prompt_ids: list[int], continuations: Sequence[list[int]], adapter_uid: int
    ) -> Iterator[list[ContinuationScore] | None]:
        """:meth:`score` one forward pass per ``next``: None after each pass but the last, then the scores.

        The prompt runs once; its keys and values are then shared by every continuation (options
        of a multiple-choice item share long prompts, especially with retrieved context). A
        Generate of the same prompt and adapter left its blocks: only the rest is computed. The
        engine runs each pass as its own scheduler operation, so decoding goes on between the
        passes of a long Score instead of waiting for all of them.
        """
        blocks = self.prefix.lookup(adapter_uid, prompt_ids)
        if self.prefix.enabled:
            self._count_lookup(len(blocks) * self.prefix.block_tokens, len(prompt_ids))
        rows = [list(c) for c in continuations if len(c) > 1]
        if self.lean is not None:
            first, rest = yield from self._score_packed(prompt_ids, rows, adapter_uid, blocks)
        else:
            first, rest = self._score_modules(prompt_ids, rows, adapter_uid, blocks)
        results = []
        row = 0
        for continuation in continuations:
            if not continuation:
                results.append(ContinuationScore(logprob=0.0, tokens=0, greedy=True))
                continue
            logprob = float(first[continuation[0]])
            greedy = int(first.argmax()) == continuation[0]
            if len(continuation) > 1:
                token_lp, matches = rest[row]
                logprob += float(token_lp.sum())
                greedy = greedy and bool(matches.all())
                row += 1
            results.append(ContinuationScore(logprob, len(continuation), greedy))
        yield results

    def _score_packed(
        self, prompt_ids: list[int], rows: list[list[int]], adapter_uid: int, blocks: Sequence[Block]
    ) -> Generator[None, None, tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]]:
        """Score on the lean forward: the prompt's uncached rest, then the continuations, packed.

        The first pass reads the rest of the prompt (segment 0) and the first group of
        continuations, less their last tokens, as one segment of branches, each seeing the whole
        prompt and itself. Further groups follow in passes of their own over the same prompt keys,
        so one pass holds at most ``SCORE_TOKENS_PER_PASS`` continuation tokens (or one longer
        continuation): a request of 64 near-context-length options must not build one mask, or
        one logits tensor, over all of them at once. Returns log-probabilities after the prompt
        ``(vocab,)`` and, per continuation, :func:`_judged` for each of its tokens after the first.
        """
        assert self.lean is not None
        cache = _PromptThenContinuations(self.cache, blocks)
        tail = prompt_ids[cache.prompt_tokens :]
        first = torch.empty(0)
        rest: list[tuple[torch.Tensor, torch.Tensor]] = []
        for n, group in enumerate(_groups([len(r) - 1 for r in rows], SCORE_TOKENS_PER_PASS) or [[]]):
            if n:
                yield None  # a pass is done: the scheduler may run a step before the next
            cache.extends_prompt = reads_prompt = n == 0
            segments = [Segment(cache.prompt_tokens, len(tail))] if reads_prompt else []
            tokens = list(tail) if reads_prompt else []
            sizes = [len(rows[i]) - 1 for i in group]
            if group:
                segments.append(Segment(len(prompt_ids), sum(sizes), branches=tuple(sizes)))
                tokens += [t for i in group for t in rows[i][:-1]]
            with self.bank.batch([adapter_uid] * len(segments), [s.length for s in segments]):
                hidden = self.lean.packed(torch.tensor(tokens, dtype=torch.int64), segments, cache)
            # Logits only where a continuation token is predicted: from the prompt's last token on.
            predicting = hidden[len(tail) - 1 :] if reads_prompt else hidden
            logprobs = torch.log_softmax(self.head(predicting).float(), dim=-1)
            if reads_prompt:
                first, logprobs = logprobs[0], logprobs[1:]
            for i, part in zip(group, logprobs.split(sizes), strict=True):
                rest.append(_judged(part, rows[i][1:]))
        self._save_blocks(
            adapter_uid,
            prompt_ids,
            lambda start, end: (
                torch.stack([k[0, :, start:end] for k in cache.keys]),
                torch.stack([v[0, :, start:end] for v in cache.values]),
            ),
        )
        return first, rest

    def _score_modules(
        self, prompt_ids: list[int], rows: list[list[int]], adapter_uid: int, blocks: Sequence[Block]
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Score on Hugging Face's modules (the fallback): the same results as :meth:`_score_packed`."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        reused = 0
        if blocks:
            keys, values = _joined(blocks)
            reused = keys.shape[2]
            for layer in range(keys.shape[0]):
                cache.update(keys[layer][None].clone(), values[layer][None].clone(), layer)
        with self.bank.batch([adapter_uid], len(prompt_ids) - reused):
            out = self.model(
                input_ids=torch.tensor([prompt_ids[reused:]]), past_key_values=cache, logits_to_keep=1
            )
        # Each full-attention layer of a DynamicCache holds (batch, kv_heads, tokens, head_dim)
        # tensors as .keys/.values (getattr: the type union also names layers without them).
        held = [(getattr(layer, "keys"), getattr(layer, "values")) for layer in cache.layers]  # noqa: B009
        self._save_blocks(
            adapter_uid,
            prompt_ids,
            lambda start, end: (
                torch.stack([k[0, :, start:end] for k, _ in held]),
                torch.stack([v[0, :, start:end] for _, v in held]),
            ),
        )
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        if not rows:
            return first, []
        # Each continuation's tokens after the first are predicted from the shared prompt cache.
        width = max(len(r) for r in rows) - 1
        ids = torch.zeros(len(rows), width, dtype=torch.int64)
        attention = torch.ones(len(rows), len(prompt_ids) + width, dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r) - 1] = torch.tensor(r[:-1])
            attention[i, len(prompt_ids) + len(r) - 1 :] = 0
        cache.batch_repeat_interleave(len(rows))
        with self.bank.batch([adapter_uid] * len(rows), width):
            rest = self.model(input_ids=ids, attention_mask=attention, past_key_values=cache).logits.float()
        rest = torch.log_softmax(rest, dim=-1)
        return first, [_judged(rest[i, : len(r) - 1], r[1:]) for i, r in enumerate(rows)]


class _PromptThenContinuations:
    """Score's ``SegmentCache``: in the first pass (``extends_prompt``), segment 0 extends the
    prompt's keys and values (starting from its cached blocks); every other segment is a group of
    continuations that sees the whole prompt and itself, and is kept nowhere."""

    def __init__(self, cache: SlotKVCache, blocks: Sequence[Block]) -> None:
        if blocks:
            keys, values = _joined(blocks)
            self.keys = [keys[layer][None] for layer in range(cache.layers)]
            self.values = [values[layer][None] for layer in range(cache.layers)]
        else:
            empty = torch.zeros(1, cache.kv_heads, 0, cache.head_dim, dtype=cache.dtype)
            self.keys = [empty] * cache.layers
            self.values = [empty] * cache.layers
        self.prompt_tokens = self.keys[0].shape[2]
        self.extends_prompt = True  # segment 0 of the next pass is the prompt's rest

    def segment(
        self, layer: int, index: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seen_k = torch.cat([self.keys[layer], keys], dim=2)
        seen_v = torch.cat([self.values[layer], values], dim=2)
        if index == 0 and self.extends_prompt:
            self.keys[layer], self.values[layer] = seen_k, seen_v
        return seen_k, seen_v


def _groups(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive indices of ``sizes`` in groups of at most ``budget`` in total (or one item)."""
    groups: list[list[int]] = []
    total = budget
    for i, size in enumerate(sizes):
        if total + size > budget:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += size
    return groups


def _judged(logprobs: torch.Tensor, targets: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target token, and whether it was the most likely: ``(n,)`` each."""
    index = torch.tensor(list(targets))
    return logprobs.gather(1, index[:, None]).squeeze(1), logprobs.argmax(dim=-1) == index


def _joined(blocks: Sequence[Block]) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of consecutive blocks as ``(layers, kv_heads, tokens, head_dim)`` each."""
    if len(blocks) == 1:
        return blocks[0].keys, blocks[0].values
    return torch.cat([b.keys for b in blocks], dim=2), torch.cat([b.values for b in blocks], dim=2)
