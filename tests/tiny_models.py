"""Tiny random models of the real architectures, built from configs (no downloads), saved in the hub layout."""

from __future__ import annotations

from pathlib import Path

import torch

from focus_tool.embedded.build import EmbeddedArch, build_model, build_processor

TINY = EmbeddedArch(
    image_size=32,
    patch_size=8,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    text_width=32,
    text_layers=3,
    text_heads=4,
    text_kv_heads=2,
    max_positions=256,
)


def tiny_llava(seed: int = 0, attn: str = "sdpa"):
    """(model, processor): LlavaForConditionalGeneration with a 4 x 4 image grid, GQA 4 heads / 2 KV heads."""
    torch.manual_seed(seed)
    processor = build_processor(TINY)
    tok = processor.tokenizer
    model = build_model(
        len(tok), tok.convert_tokens_to_ids("<image>"), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, TINY
    )
    model.config.text_config._attn_implementation = attn
    model.config._attn_implementation = attn
    return model.eval(), processor


def save_tiny_llava(path: Path, seed: int = 0) -> Path:
    """Save a tiny LLaVA in the hub file layout and return the folder."""
    model, processor = tiny_llava(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
