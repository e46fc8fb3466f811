"""Tiny real Hugging Face models built from configs: Llama LMs and Qwen2-VL VLMs with random weights.

Tests and the default model family use these. `logit_scale` widens the gap between top logits of a
random model, so that a multi-token pass and one-token steps (which round differently in the last
bits) cannot flip a greedy choice (docs/design.md, numerics).
"""
from __future__ import annotations

import torch
from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2VLConfig,
                          Qwen2VLForConditionalGeneration)

from .bundle import ModelBundle
from .tokenizer import build_word_tokenizer


def word_vocab(n: int) -> list[str]:
    return [f"w{i}" for i in range(n)]


def _scale_head(model: torch.nn.Module, logit_scale: float) -> None:
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(logit_scale)


def tiny_llama(tokenizer: PreTrainedTokenizerFast, layers: int = 4, hidden: int = 64, seed: int = 0,
               logit_scale: float = 8.0, max_positions: int = 512) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_positions, tie_word_embeddings=False,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(cfg)
    _scale_head(model, logit_scale)
    return model.eval()


def tiny_qwen2vl(tokenizer: PreTrainedTokenizerFast, layers: int = 4, hidden: int = 64, vision_depth: int = 1,
                 seed: int = 0, logit_scale: float = 8.0, max_positions: int = 512,
                 vision_width: int = 32) -> Qwen2VLForConditionalGeneration:
    """`vision_width` is the vision tower's own width (its merger projects to `hidden`)."""
    torch.manual_seed(seed)
    ids = tokenizer.convert_tokens_to_ids
    head_dim = hidden // 4
    section = [head_dim // 8, head_dim // 8 + (head_dim // 2 - 3 * (head_dim // 8)) // 2]
    section.append(head_dim // 2 - sum(section))
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, tie_word_embeddings=False,
                         rope_scaling={"type": "mrope", "mrope_section": section},
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(depth=vision_depth, embed_dim=vision_width, hidden_size=hidden,
                           num_heads=max(2, vision_width // 16), patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False)
    model = Qwen2VLForConditionalGeneration(cfg)
    _scale_head(model, logit_scale)
    return model.eval()


def image_processor(size: int = 112):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    return Qwen2VLImageProcessorPil(min_pixels=size * size, max_pixels=size * size)


def tiny_bundle(kind: str = "llama", vocab: int = 60, image_size: int = 112, **kw) -> ModelBundle:
    tok = build_word_tokenizer(word_vocab(vocab))
    if kind == "llama":
        return ModelBundle(tiny_llama(tok, **kw), tok)
    return ModelBundle(tiny_qwen2vl(tok, **kw), tok, image_processor(image_size))
