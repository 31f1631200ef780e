"""A lean forward pass for Llama-shaped models: fused projections, no Hugging Face module dispatch.

Two changes to the work of a step, nothing else:
- q/k/v and gate/up are each one GEMM over weights concatenated at load time (fewer, larger
  GEMMs: a decode step's projections are skinny, and each call has a fixed cost). The model's
  own Linear modules keep working: their weights become views into the fused tensors, so memory
  is not doubled and the Hugging Face path (the fallback) reads the same numbers.
- the layer loop calls tensor functions directly instead of nested ``nn.Module`` calls with
  their hooks and keyword plumbing, on the 30 layers of every step.
Each product runs on a plain weight or, by default, on a copy reordered once for oneDNN
(:mod:`.packed_linear`, chosen by the runner). Everything else numerical is Hugging Face's own:
its RMSNorm formula, its rotary embedding module, ``apply_rotary_pos_emb`` and its SDPA attention
function, so greedy answers stay those of ``generate`` (tests/engine_contract.py checks both
paths). The packed forward (:meth:`LeanDecoder.packed`: prefill chunks and Score without
padding) calls torch's SDPA as that function does for a causal prompt, with grouped key heads.

LoRA deltas land on their slice of a fused output: the bank's per-row masked A/B product for,
say, ``k_proj`` is added to the k columns of the qkv output, for adapters that target any
subset of the projections.

Only plain Llama layers qualify (:func:`unsupported` says why not); anything else runs the
Hugging Face modules, which stay the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hybrid_assistant.server.engines.lora_bank import LoraBank
from hybrid_assistant.server.engines.packed_linear import Linear, plain


def unsupported(model: nn.Module) -> str | None:
    """Why the lean path cannot run ``model`` exactly, or None when it can."""
    config: Any = getattr(model, "config", None)
    if config is None or config.model_type != "llama":
        return f"model type {getattr(config, 'model_type', '?')!r} (the lean path knows 'llama')"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "projections with biases"
    if config._attn_implementation != "sdpa":
        return f"attention implementation {config._attn_implementation!r} (the lean path uses sdpa)"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    return None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # LlamaRMSNorm, operation for operation (float32 statistics, cast back, then the weight).
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _base_linear(module: nn.Module) -> nn.Linear:
    base = getattr(module, "base", module)  # a LoraLinear wraps the model's Linear
    assert isinstance(base, nn.Linear)
    return base


def _fuse(modules: Sequence[nn.Module]) -> tuple[torch.Tensor, list[int]]:
    """One weight for several Linears with the same input; theirs become views of it."""
    linears = [_base_linear(m) for m in modules]
    fused = torch.cat([lin.weight.detach() for lin in linears]).contiguous()
    sizes = [lin.out_features for lin in linears]
    start = 0
    for lin, size in zip(linears, sizes, strict=True):
        lin.weight = nn.Parameter(fused[start : start + size], requires_grad=False)
        start += size
    return fused, sizes


@dataclass(frozen=True)
class Segment:
    """A run of tokens of one sequence in a packed forward (:meth:`LeanDecoder.packed`).

    With ``branches``, the run is several independent continuations of the same cached prefix
    packed together (Score's options): each starts at ``start`` and sees the prefix and its own
    earlier tokens only.
    """

    start: int  # tokens of the sequence already cached before this run: its first position
    length: int
    branches: tuple[int, ...] = ()  # the continuations' lengths, summing to ``length``

    def __post_init__(self) -> None:
        if self.branches and (sum(self.branches) != self.length or min(self.branches) < 1):
            raise ValueError(f"branches {self.branches} do not split {self.length} tokens")

    def positions(self) -> torch.Tensor:
        if not self.branches:
            return torch.arange(self.start, self.start + self.length)
        return torch.cat([torch.arange(self.start, self.start + b) for b in self.branches])

    def mask(self) -> torch.Tensor | None:
        """``(1, 1, length, start + length)`` keys each query sees; None for plain causal from 0."""
        if not self.branches:
            if not self.start:
                return None
            keys = torch.arange(self.start + self.length)
            return (keys[None, :] <= self.positions()[:, None])[None, None]
        branch = torch.repeat_interleave(torch.arange(len(self.branches)), torch.tensor(self.branches))
        positions = self.positions()
        own = (branch[:, None] == branch[None, :]) & (positions[None, :] <= positions[:, None])
        prefix = torch.ones(self.length, self.start, dtype=torch.bool)
        return torch.cat([prefix, own], dim=1)[None, None]


class SegmentCache(Protocol):
    def segment(
        self, layer: int, index: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep segment ``index``'s new keys and values ``(1, kv_heads, length, head_dim)`` of
        ``layer``; return every key and value its queries attend to, positions ``0..start+length``."""
        ...


@dataclass
class _Layer:
    index: int
    attention: nn.Module  # Hugging Face's, for its attention function's arguments
    in_norm: tuple[torch.Tensor, float]
    post_norm: tuple[torch.Tensor, float]
    qkv: torch.Tensor
    qkv_sizes: list[int]
    qkv_paths: list[str]
    o_path: str
    gate_up: torch.Tensor
    gate_up_sizes: list[int]
    gate_up_paths: list[str]
    down_path: str
    # The four products, each ``x -> x @ weight.T`` (plain F.linear or a prepacked weight).
    qkv_linear: Linear
    o_linear: Linear
    gate_up_linear: Linear
    down_linear: Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    head_dim: int
    scaling: float


class LeanDecoder:
    def __init__(
        self, model: nn.Module, bank: LoraBank, make_linear: Callable[[torch.Tensor], Linear] = plain
    ) -> None:
        """``make_linear`` turns each (fused) weight into its product; see :mod:`.packed_linear`."""
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self._attend = sdpa_attention_forward
        self._rotate = apply_rotary_pos_emb
        self.bank = bank
        inner: Any = getattr(model, "model")  # noqa: B009 - LlamaForCausalLM's decoder stack
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.norm = (inner.norm.weight, float(inner.norm.variance_epsilon))
        self.layers: list[_Layer] = []
        self._own_every_weight(model)  # first: the fused weights are then the only copies
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            prefix = f"model.layers.{i}"
            qkv, qkv_sizes = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
            gate_up, gate_up_sizes = _fuse([mlp.gate_proj, mlp.up_proj])
            self.layers.append(
                _Layer(
                    index=i,
                    attention=attn,
                    in_norm=(layer.input_layernorm.weight, float(layer.input_layernorm.variance_epsilon)),
                    post_norm=(
                        layer.post_attention_layernorm.weight,
                        float(layer.post_attention_layernorm.variance_epsilon),
                    ),
                    qkv=qkv,
                    qkv_sizes=qkv_sizes,
                    qkv_paths=[f"{prefix}.self_attn.{p}_proj" for p in "qkv"],
                    o_path=f"{prefix}.self_attn.o_proj",
                    gate_up=gate_up,
                    gate_up_sizes=gate_up_sizes,
                    gate_up_paths=[f"{prefix}.mlp.gate_proj", f"{prefix}.mlp.up_proj"],
                    down_path=f"{prefix}.mlp.down_proj",
                    qkv_linear=make_linear(qkv),
                    o_linear=make_linear(_base_linear(attn.o_proj).weight),
                    gate_up_linear=make_linear(gate_up),
                    down_linear=make_linear(_base_linear(mlp.down_proj).weight),
                    act=mlp.act_fn,
                    head_dim=int(attn.head_dim),
                    scaling=float(attn.scaling),
                )
            )

    @staticmethod
    def _own_every_weight(model: nn.Module) -> None:
        """Copy every weight out of the model file's mapping into memory of its own.

        Loading maps the safetensors file, and weights are views of that mapping. The fused
        tensors are new memory; while any weight still views the file, the whole mapping stays,
        and the pages the fusing read stay resident beside their fused copies (+0.27 GB for
        SmolLM2). With every weight copied out first, the mapping goes, and the fused tensors
        replace their parts: the same resident size as the unfused model. A tied weight is one
        Parameter, so it stays tied.
        """
        for param in model.parameters():
            param.data = param.data.clone()

    def _lora(self, x: torch.Tensor, y: torch.Tensor, paths: Sequence[str], sizes: Sequence[int]) -> None:
        """Add each path's adapter deltas to its column slice of ``y`` (rows of ``x``)."""
        start = 0
        for path, size in zip(paths, sizes, strict=True):
            active = self.bank.active_for(path)
            if active is not None:
                # Masked, not multiplied by 0: one adapter's overflow must not reach other rows.
                xa = (x @ active.a_cat.t()).masked_fill_(self.bank.mask_for(active.owner), 0.0)
                y[:, start : start + size].addmm_(xa, active.bt_cat)
            start += size

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Final hidden states ``(rows, T, hidden)`` for ``tokens`` at ``positions`` (padded rows)."""
        hidden = self.embed(tokens)
        cos, sin = self.rotary(hidden, positions)
        for layer in self.layers:
            hidden = self._layer(layer, hidden, cos, sin, mask, cache)
        return _rms_norm(hidden, *self.norm)

    def _layer(
        self,
        layer: _Layer,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        cache: Any,
    ) -> torch.Tensor:
        """One decoder layer over padded rows (a function of its own: bench/compiled_step.py compiles it)."""
        q, k, v = self._query_key_value(layer, x, cos, sin)
        k, v = cache.update(k, v, layer.index)
        attended, _ = self._attend(layer.attention, q, k, v, mask, dropout=0.0, scaling=layer.scaling)
        return self._rest_of_layer(layer, x, attended)

    def packed(self, tokens: torch.Tensor, segments: Sequence[Segment], cache: SegmentCache) -> torch.Tensor:
        """Final hidden states ``(N, hidden)`` for ``N`` tokens packed end to end, no padding.

        ``segments`` split the tokens into runs of one sequence each, in order. Every product
        runs once over all ``N`` tokens; only attention runs per segment, against the keys that
        ``cache`` holds for that segment's sequence. A segment that starts its sequence is plain
        causal attention (Hugging Face's own prefill call: no mask, so SDPA skips the blocks above
        the diagonal); one that continues a cached prefix gets a causal mask offset by its start,
        and one of branches the mask :meth:`Segment.mask` builds.
        """
        offsets = [0]
        for segment in segments:
            offsets.append(offsets[-1] + segment.length)
        if offsets[-1] != tokens.shape[0]:
            raise ValueError(f"segments cover {offsets[-1]} tokens, not {tokens.shape[0]}")
        positions = torch.cat([s.positions() for s in segments])[None]
        hidden = self.embed(tokens)[None]
        cos, sin = self.rotary(hidden, positions)
        masks = [s.mask() for s in segments]
        for layer in self.layers:
            q, k, v = self._query_key_value(layer, hidden, cos, sin)
            parts = []
            for i, mask in enumerate(masks):
                span = slice(offsets[i], offsets[i + 1])
                seen_k, seen_v = cache.segment(layer.index, i, k[:, :, span], v[:, :, span])
                # Hugging Face's call for a causal prompt (no mask, grouped keys); with a mask it
                # repeats the key heads instead, which gives bitwise the same result, slower.
                part = F.scaled_dot_product_attention(
                    q[:, :, span],
                    seen_k,
                    seen_v,
                    attn_mask=mask,
                    is_causal=mask is None and segments[i].length > 1,
                    scale=layer.scaling,
                    enable_gqa=True,
                )
                parts.append(part.transpose(1, 2))
            attended = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            hidden = self._rest_of_layer(layer, hidden, attended)
        return _rms_norm(hidden, *self.norm)[0]

    def _query_key_value(
        self, layer: _Layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rotated queries, keys and values ``(rows, heads, T, head_dim)`` of one layer."""
        rows, length, width = x.shape
        flat = _rms_norm(x, *layer.in_norm).reshape(-1, width)
        qkv = layer.qkv_linear(flat)
        self._lora(flat, qkv, layer.qkv_paths, layer.qkv_sizes)
        q, k, v = (
            part.reshape(rows, length, -1, layer.head_dim).transpose(1, 2)
            for part in qkv.split(layer.qkv_sizes, dim=-1)
        )
        q, k = self._rotate(q, k, cos, sin)
        return q, k, v

    def _rest_of_layer(self, layer: _Layer, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Output projection, residuals and MLP after attention ``(rows, T, heads, head_dim)``."""
        rows, length, width = x.shape
        attended = attended.reshape(rows * length, -1).contiguous()
        out = layer.o_linear(attended)
        self._lora(attended, out, [layer.o_path], [width])
        x = x + out.view(rows, length, width)

        flat = _rms_norm(x, *layer.post_norm).reshape(-1, width)
        gate_up = layer.gate_up_linear(flat)
        self._lora(flat, gate_up, layer.gate_up_paths, layer.gate_up_sizes)
        gate, up = gate_up.split(layer.gate_up_sizes, dim=-1)
        inner = layer.act(gate) * up
        down = layer.down_linear(inner)
        self._lora(inner, down, [layer.down_path], [width])
        return x + down.view(rows, length, width)
