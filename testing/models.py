"""A tiny random Llama with a real BPE tokenizer, and PEFT LoRA adapters for any model.

The tests, the chaos bench and the serving benches use these instead of a real model: the tiny
model builds in about a second and runs fast on two cores, yet goes through the same code as
SmolLM2 (a byte-level BPE tokenizer with chat special tokens, grouped-query attention, tied
embeddings, PEFT safetensors adapters).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Tell me a story about a cat, a dog and a bird.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024.",
    'Answer in JSON: {"answer": "yes", "confidence": 0.9}',
    "Héllo wörld — unicode ünïcödé ✓ 日本語",
] * 20


def build_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama (GQA, tied embeddings) and a 400-token byte-level BPE tokenizer; ~1 MB."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        # head_dim 64 with grouped-query attention: shapes every engine's kernels support.
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.2,  # peaked logits: greedy choices are not near-ties
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    GenerationConfig(eos_token_id=eos, bos_token_id=tokenizer.bos_token_id).save_pretrained(directory)
    return directory


def build_adapter(
    model_dir: Path,
    out_dir: Path,
    *,
    seed: int = 1,
    rank: int = 4,
    alpha: int = 8,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    scale: float = 1.0,
    **config: Any,
) -> Path:
    """A PEFT LoRA adapter with random (non-zero) A and B, saved as safetensors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **config
    )
    peft_model = get_peft_model(base, lora)
    if scale != 1.0:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(scale)
    peft_model.save_pretrained(str(out_dir))
    return out_dir
