"""A tiny random Qwen3-VL (``Qwen3VLForConditionalGeneration``) shaped like Qwen/Qwen3-VL-8B-Instruct, built from
configs (no downloads) and saved in that checkpoint's hub layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.tiny_models import QWEN_SPECIALS, _qwen2_style_tokenizer

# What the chat template of Qwen/Qwen3-VL-*-Instruct renders for the turns focus-tool sends (no tools): unlike
# Qwen2.5-VL's there is NO default system message; a system turn is written only when given; user content items in
# order, each image as <|vision_start|><|image_pad|><|vision_end|> ("Picture k: " before it with add_vision_id).
QWEN3VL_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}{%- if message.role == 'user' or message.role == 'assistant' %}"
    "<|im_start|>{{ message.role }}\n{% if message.content is string %}{{ message.content }}{% else %}"
    "{% for content in message.content %}"
    "{% if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content.type == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endif %}{%- endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3's added tokens after the vision ones
QWEN3_EXTRA_TOKENS = ["<tool_call>", "</tool_call>", "<think>", "</think>"]
QWEN3VL_MIN_PIXELS = 64 * 64  # real: 65_536 (256 x 256)
QWEN3VL_MAX_PIXELS = 192 * 192  # real: 16_777_216 (4096 x 4096); tiny: at most 36 merged tokens
QWEN3VL_PATCH_PX, QWEN3VL_MERGE = 16, 2  # as the real checkpoints: 32-px merged cells
QWEN3VL_DEEPSTACK = 3  # deepstack_visual_indexes [8, 16, 24] of the 8B's 27 vision layers -> LM layers 0, 1, 2


def tiny_qwen3vl(seed: int = 0, attn: str = "sdpa"):
    """(model, image_processor, tokenizer): Qwen3VLForConditionalGeneration shaped like Qwen3-VL-8B-Instruct.

    16-px patches, 2 x 2 merge, temporal patch 2, learned position table interpolated to the grid, three DeepStack
    mergers (vision layers 0, 1, 2 of 3 -> added after LM layers 0, 1, 2 of 4), interleaved M-RoPE with
    mrope_section summing to head_dim / 2, Qwen3 LM with q/k RMSNorm, GQA 4 heads / 2 KV heads, untied embeddings;
    the checkpoint's special tokens, chat template and processor settings (mean/std 0.5), min/max pixels scaled down.
    """
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(seed)
    tok = _qwen2_style_tokenizer(
        QWEN_SPECIALS + QWEN3_EXTRA_TOKENS, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    )
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    tok.chat_template = QWEN3VL_CHAT_TEMPLATE
    image_processor = Qwen2VLImageProcessorPil(**_processor_settings())
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    config = Qwen3VLConfig(
        vision_config={
            "depth": 3,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "patch_size": QWEN3VL_PATCH_PX,
            "spatial_merge_size": QWEN3VL_MERGE,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,  # an 8 x 8 table (real: 48 x 48 = 2304), bilinearly resized to the grid
            "deepstack_visual_indexes": list(range(QWEN3VL_DEEPSTACK)),
            "hidden_act": "gelu_pytorch_tanh",
        },
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "vocab_size": len(tok),
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [2, 1, 1],  # real: [24, 20, 20] of head_dim 128
                "mrope_interleaved": True,
            },
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "bos_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(config)
    for cfg in (model.config, model.config.text_config, model.config.vision_config):
        cfg._attn_implementation = attn
    return model.eval(), image_processor, tok


def _processor_settings() -> dict:
    """The image-processor fields of the checkpoint's preprocessor_config.json, with the pixel range scaled down."""
    return {
        "size": {"shortest_edge": QWEN3VL_MIN_PIXELS, "longest_edge": QWEN3VL_MAX_PIXELS},
        "patch_size": QWEN3VL_PATCH_PX,
        "temporal_patch_size": 2,
        "merge_size": QWEN3VL_MERGE,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }


def save_tiny_qwen3vl(path: Path, seed: int = 0) -> Path:
    """Save a tiny Qwen3-VL in the file layout of Qwen/Qwen3-VL-8B-Instruct and return the folder.

    ``preprocessor_config.json`` names the stock classes as the hub does (``Qwen2VLImageProcessorFast``, processor
    ``Qwen3VLProcessor``); without torchvision ``AutoImageProcessor`` resolves it to the PIL backend.
    """
    model, _, tok = tiny_qwen3vl(seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    pre = {
        **_processor_settings(),
        "processor_class": "Qwen3VLProcessor",
        "image_processor_type": "Qwen2VLImageProcessorFast",
    }
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": QWEN3VL_CHAT_TEMPLATE}, indent=2))
    (path / "chat_template.jinja").unlink(missing_ok=True)
    return path
