"""The lean forward (fused q/k/v and gate/up, no module dispatch) against Hugging Face's modules.

Same model, same cache layout, same batches: logits agree to float32 rounding and every greedy
token is the same, with adapters targeting any subset of the fused projections mixed in one batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from hybrid_assistant.adapters.peft_format import inspect_adapter, load_lora_weights
from hybrid_assistant.server.engines.lean_forward import Segment, unsupported
from hybrid_assistant.server.engines.model_runner import ModelRunner
from hybrid_assistant.server.engines.packed_linear import unavailable
from hybrid_assistant.testing.models import build_adapter

# Adapters over every combination that splits a fused GEMM differently.
TARGETS = {
    1: ("q_proj", "v_proj"),
    2: ("k_proj", "gate_proj"),
    3: ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    4: ("up_proj", "down_proj"),
}


def _runner(
    model_dir: Path, adapters: dict[int, Path], *, lean: bool, prepack: bool = True, prefix_cache_mb: int = 0
) -> ModelRunner:
    runner = ModelRunner(
        model_dir, dtype=torch.float32, max_rows=8, max_tokens=128, model_name="tiny",
        aliases={str(model_dir)}, lean=lean, prepack=prepack, prefix_cache_bytes=prefix_cache_mb << 20,
    )  # fmt: skip
    for uid, path in adapters.items():
        spec = inspect_adapter(path, runner.base_spec, max_rank=64)
        runner.bank.add(uid, load_lora_weights(spec, torch.float32))
    return runner


@pytest.fixture(scope="module")
def lean_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("lean-adapters")
    return {
        uid: build_adapter(tiny_model_dir, root / f"a{uid}", seed=uid, rank=4, targets=targets)
        for uid, targets in TARGETS.items()
    }


@pytest.mark.parametrize("prepack", [True, False], ids=["prepacked", "plain-weights"])
def test_lean_and_hugging_face_paths_agree(
    tiny_model_dir: Path, lean_adapters: dict[int, Path], prepack: bool
) -> None:
    lean = _runner(tiny_model_dir, lean_adapters, lean=True, prepack=prepack)
    # The reference: Hugging Face's modules and F.linear everywhere, LM head included.
    reference = _runner(tiny_model_dir, lean_adapters, lean=False, prepack=False)
    assert lean.lean is not None and reference.lean is None
    assert lean.prepacked is prepack and not reference.prepacked
    torch.manual_seed(0)
    rows, uids = 6, [0, 1, 2, 3, 4, 1]
    lengths = torch.tensor([9, 4, 12, 7, 12, 1])
    prompt = torch.randint(5, 300, (rows, 12))
    zeros = torch.zeros(rows, dtype=torch.int64)
    everyone = list(range(rows))
    # A prefill of prompts of different lengths (padding included), then decode steps.
    got = lean.forward(0, prompt, zeros, lengths, uids, everyone)
    want = reference.forward(0, prompt, zeros, lengths, uids, everyone)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    starts = lengths.clone()
    for _ in range(6):
        tokens = got.argmax(-1, keepdim=True)
        assert torch.equal(tokens, want.argmax(-1, keepdim=True))
        ones = torch.ones(rows, dtype=torch.int64)
        got = lean.forward(0, tokens, starts, ones, uids, everyone)
        want = reference.forward(0, tokens, starts, ones, uids, everyone)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        starts += 1


def test_fused_weights_are_shared_not_copied(tiny_model_dir: Path) -> None:
    runner = _runner(tiny_model_dir, {}, lean=True)
    assert runner.lean is not None
    layer = runner.lean.layers[0]
    attention = runner.model.model.layers[0].self_attn
    q = attention.q_proj.base.weight  # wrapped by the LoRA bank
    assert q.untyped_storage().data_ptr() == layer.qkv.untyped_storage().data_ptr()
    assert torch.equal(layer.qkv[: q.shape[0]], q)
    model = runner.model
    if model.config.tie_word_embeddings:  # copied out of the file's mapping, still one weight
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_other_architectures_use_the_hugging_face_modules() -> None:
    config = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    reason = unsupported(model)
    assert reason is not None and "qwen2" in reason


def test_prepacked_weights_only_where_they_apply(tiny_model_dir: Path) -> None:
    # torch's CPU wheels ship oneDNN: on the pinned torch, float32 prepacks.
    assert unavailable(torch.float32) is None
    assert "float32 only" in (unavailable(torch.bfloat16) or "")
    runner = ModelRunner(
        tiny_model_dir, dtype=torch.bfloat16, max_rows=4, max_tokens=64, model_name="tiny",
        aliases={str(tiny_model_dir)},
    )  # fmt: skip
    assert not runner.prepacked and runner.head is runner.lm_head  # bfloat16 falls back to F.linear
    out = runner.forward(
        0, torch.tensor([[5, 6, 7]]), torch.zeros(1, dtype=torch.int64), torch.tensor([3]), [0], [0]
    )
    assert out.shape == (1, runner.vocab_size) and torch.isfinite(out).all()


def test_a_prepacked_kernel_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid_assistant.server.engines import packed_linear

    real = packed_linear.packed

    def off_by_one(weight: torch.Tensor, *, rows_hint: int) -> packed_linear.Linear:
        inner = real(weight, rows_hint=rows_hint)
        return lambda x: inner(x) + 1.0

    monkeypatch.setattr(packed_linear, "packed", off_by_one)
    assert unavailable(torch.float32) == "oneDNN linear disagrees with F.linear"

    def refuses(weight: torch.Tensor, *, rows_hint: int) -> packed_linear.Linear:
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(packed_linear, "packed", refuses)
    assert unavailable(torch.float32) == "oneDNN linear failed: no kernel for this CPU"


@pytest.mark.parametrize("prepack", [True, False], ids=["prepacked", "plain-weights"])
def test_packed_prefill_equals_the_padded_one(
    tiny_model_dir: Path, lean_adapters: dict[int, Path], prepack: bool
) -> None:
    # The scheduler's prefill: chunks of different lengths packed end to end, the second chunk
    # of each prompt continuing its cached first (an offset causal mask), adapters mixed.
    lean = _runner(tiny_model_dir, lean_adapters, lean=True, prepack=prepack)
    reference = _runner(tiny_model_dir, lean_adapters, lean=False, prepack=False)
    torch.manual_seed(1)
    uids = [0, 1, 2, 3, 4]
    prompts = [torch.randint(5, 300, (n,)).tolist() for n in (9, 4, 12, 7, 2)]
    split = [4, 1, 6, 3, 1]
    rows, everyone = list(range(len(uids))), list(range(len(uids)))
    firsts = [p[:k] for p, k in zip(prompts, split, strict=True)]
    rests = [p[k:] for p, k in zip(prompts, split, strict=True)]
    for runner in (lean, reference):
        assert runner.prefill(rows, [0] * len(rows), firsts, uids, []).shape == (0, runner.vocab_size)
    got = lean.prefill(rows, split, rests, uids, everyone)
    want = reference.prefill(rows, split, rests, uids, everyone)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # The cache holds what the padded path wrote: decoding on from it agrees too.
    starts = torch.tensor([len(p) for p in prompts])
    for _ in range(4):
        tokens = got.argmax(-1, keepdim=True)
        assert torch.equal(tokens, want.argmax(-1, keepdim=True))
        ones = torch.ones(len(rows), dtype=torch.int64)
        got = lean.forward(0, tokens, starts, ones, uids, everyone)
        want = reference.forward(0, tokens, starts, ones, uids, everyone)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        starts += 1


def test_packed_prefill_writes_the_rows_it_is_given(tiny_model_dir: Path) -> None:
    runner = _runner(tiny_model_dir, {}, lean=True)
    torch.manual_seed(2)
    a, b = torch.randint(5, 300, (6,)).tolist(), torch.randint(5, 300, (3,)).tolist()
    # Rows out of order and not consecutive: each chunk lands in its own row only.
    got = runner.prefill([5, 2], [0, 0], [a, b], [0, 0], [0, 1])
    alone = _runner(tiny_model_dir, {}, lean=True)
    want = torch.cat([alone.prefill([0], [0], [a], [0], [0]), alone.prefill([1], [0], [b], [0], [0])])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)  # other GEMM shapes: rounding
    for layer in range(runner.cache.layers):
        keys, alone_keys = runner.cache.keys[layer], alone.cache.keys[layer]
        torch.testing.assert_close(keys[5, :, :6], alone_keys[0, :, :6], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(keys[2, :, :3], alone_keys[1, :, :3], atol=1e-5, rtol=1e-4)
        assert not runner.cache.keys[layer][0].any() and not runner.cache.keys[layer][3].any()


def test_padded_prefill_refuses_rows_it_cannot_pad_together(tiny_model_dir: Path) -> None:
    runner = _runner(tiny_model_dir, {}, lean=False)
    with pytest.raises(ValueError, match="consecutive rows"):
        runner.prefill([0, 2], [0, 0], [[5, 6], [7]], [0, 0], [])


def test_packed_forward_refuses_segments_that_do_not_cover_the_tokens(tiny_model_dir: Path) -> None:
    runner = _runner(tiny_model_dir, {}, lean=True)
    assert runner.lean is not None
    segments = [Segment(0, 3)]
    with pytest.raises(ValueError, match="cover 3 tokens, not 4"):
        runner.lean.packed(torch.tensor([5, 6, 7, 8]), segments, runner.cache.rows_for([0], segments))


@pytest.mark.parametrize("cached", [False, True], ids=["cold", "after-a-prefill"])
def test_score_on_the_lean_forward_equals_the_hugging_face_modules(
    tiny_model_dir: Path, lean_adapters: dict[int, Path], cached: bool
) -> None:
    # One packed pass (the prompt's rest, then every option as its own segment) against the
    # modules' two passes over a repeated cache, with and without the prompt's blocks cached.
    runners = [_runner(tiny_model_dir, lean_adapters, lean=lean, prefix_cache_mb=8) for lean in (True, False)]
    torch.manual_seed(3)
    prompt = torch.randint(5, 300, (37,)).tolist()
    options = [[11], [12, 13, 14], [], [15, 16], [17, 18, 19, 20, 21]]
    for uid in (0, 3):
        scored = []
        for runner in runners:
            if cached:
                runner.prefill([0], [0], [prompt], [uid], [0])
                runner.save_prefix(0, uid, prompt)
            before = runner.prefix.stats.hit_tokens
            scored.append(runner.score(prompt, options, uid))
            assert runner.prefix.stats.hit_tokens - before == (32 if cached else 0)
        got, want = scored
        for g, w, option in zip(got, want, options, strict=True):
            assert g.logprob == pytest.approx(w.logprob, abs=1e-4)
            assert (g.tokens, g.greedy) == (w.tokens, w.greedy) and g.tokens == len(option)
        # Score keeps the prompt's blocks for the next request, as a prefill does.
        assert len(runners[0].prefix.lookup(uid, prompt, count=False)) == 2


def test_segment_masks() -> None:
    # A prompt's first chunk: no mask (SDPA's causal flag); a later chunk: causal, offset by its start.
    assert Segment(0, 3).mask() is None
    later = Segment(2, 2).mask()
    assert later is not None and later[0, 0].tolist() == [[True, True, True, False], [True, True, True, True]]
    # Branches: two continuations of a 2-token prefix, each seeing the prefix and itself only.
    branched = Segment(2, 3, branches=(1, 2))
    assert branched.positions().tolist() == [2, 2, 3]
    mask = branched.mask()
    assert mask is not None
    assert mask[0, 0].int().tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [1, 1, 0, 1, 1],
    ]


@pytest.mark.parametrize("branches", [(1, 1), (3, 0), (4,)], ids=["short", "empty-branch", "long"])
def test_branches_must_split_the_segment(branches: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="do not split 3 tokens"):
        Segment(5, 3, branches=branches)


def test_a_cache_row_refuses_a_segment_of_branches(tiny_model_dir: Path) -> None:
    runner = _runner(tiny_model_dir, {}, lean=True)
    with pytest.raises(ValueError, match="branches cannot be written"):
        runner.cache.rows_for([0], [Segment(4, 2, branches=(1, 1))])


def test_score_in_several_passes_equals_one(
    tiny_model_dir: Path, lean_adapters: dict[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A budget of 3 continuation tokens per pass splits these options over three passes (one
    # longer than the budget on its own); each pass reuses the prompt's keys from the first.
    from hybrid_assistant.server.engines import model_runner

    runner = _runner(tiny_model_dir, lean_adapters, lean=True, prefix_cache_mb=8)
    torch.manual_seed(4)
    prompt = torch.randint(5, 300, (21,)).tolist()
    options = [[11, 12], [13, 14, 15], [16], [17, 18, 19, 20, 21, 22], [23, 24]]
    whole = runner.score(prompt, options, 3)
    monkeypatch.setattr(model_runner, "SCORE_TOKENS_PER_PASS", 3)
    assert model_runner._groups([1, 2, 5, 1], 3) == [[0, 1], [2], [3]]
    runner.prefix.drop_adapter(3)  # the same cold start as the first call
    passes = list(runner.score_passes(prompt, options, 3))  # the engine runs one per scheduler op
    assert passes[:-1] == [None, None]
    split = passes[-1]
    assert split is not None
    for a, b in zip(whole, split, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert (a.tokens, a.greedy) == (b.tokens, b.greedy)
