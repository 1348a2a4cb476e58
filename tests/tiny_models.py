"""Tiny random models of the real architectures, built from configs (no downloads), saved in the hub layout."""

from __future__ import annotations

import json
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


# ---------------------------------------------------------------------------------------------- shared text side

# Words the tiny BPE tokenizers are trained on (prompts the tests and the pipeline send); anything else falls back
# to byte tokens, as in a real byte-level BPE.
_CORPUS = [
    "Is there a red card in the image?",
    "Is there a blue card in the image?",
    "Is there a green card in the image?",
    "What is the color of the dots on the red card?",
    "Yes No yes no Yes. No.",
    "This is the full image; the outlined regions are the focus regions.",
    "This is a zoomed-in view of focus region",
    "Answer with the option's letter from the given choices directly. (A) (B) (C) (D)",
    "Question: What? I need the info about all and the objects in the question.",
    "You are a helpful assistant. user assistant system",
]
# Qwen2's pre-tokenizer split (tokenizer.json of Qwen/Qwen2-7B and Qwen/Qwen2.5-VL-7B-Instruct)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _qwen2_style_tokenizer(specials: list[str], extra: dict[str, str], *, vocab_size: int = 400):
    """A small byte-level BPE with Qwen2's pre-tokenizer and the checkpoint's special tokens (trained offline)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", model_max_length=4096, **extra)


# ---------------------------------------------------------------------------------------------- LLaVA-OneVision

# chat_template.json of llava-hf/llava-onevision-qwen2-7b-ov-hf
OV_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}"
    "{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
OV_TILE_PX = 32  # real: 384 (SigLIP-so400m/14); tiny: 32 px tiles with 8 px patches -> 4 x 4 = 16 base tokens
OV_PATCH_PX = 8
OV_PINPOINTS = [[OV_TILE_PX * i, OV_TILE_PX * j] for i in range(1, 7) for j in range(1, 7)]  # real: 384 * {1..6}^2


def tiny_onevision(seed: int = 0, attn: str = "sdpa"):
    """(model, image_processor, tokenizer): LlavaOnevisionForConditionalGeneration shaped like the 7B-ov checkpoint.

    Same processor settings scaled down (pinpoints tile * {1..6}^2, anyres_max_9, "full" features, SigLIP-style
    vision tower without CLS), same special tokens (<|endoftext|>, <|im_start|>, <|im_end|>, <image>, <video>) and
    chat template; Qwen2 LM with hidden 32, 3 layers, GQA 4 heads / 2 KV heads.
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    torch.manual_seed(seed)
    tok = _qwen2_style_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<image>", "<video>"]})
    tok.chat_template = OV_CHAT_TEMPLATE
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": OV_TILE_PX, "width": OV_TILE_PX},
        image_grid_pinpoints=OV_PINPOINTS,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pad=True,
    )
    config = LlavaOnevisionConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": OV_TILE_PX,
            "patch_size": OV_PATCH_PX,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "qwen2",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tok),
            "max_position_embeddings": 4096,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "bos_token_id": None,
            "tie_word_embeddings": False,
            "use_sliding_window": False,
        },
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=OV_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    model.config.text_config._attn_implementation = attn
    model.config._attn_implementation = attn
    model.config.vision_config._attn_implementation = attn
    return model.eval(), image_processor, tok


def save_tiny_onevision(path: Path, seed: int = 0) -> Path:
    """Save a tiny OneVision in the file layout of llava-hf/llava-onevision-qwen2-7b-ov-hf (made with 4.x).

    config.json + safetensors, tokenizer files, preprocessor_config.json naming the stock image processor and
    processor, processor_config.json with the processor's own fields, chat_template.json.
    """
    model, image_processor, tok = tiny_onevision(seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    image_processor.save_pretrained(path)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    pre.update(image_processor_type="LlavaOnevisionImageProcessor", processor_class="LlavaOnevisionProcessor")
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    proc = {
        "image_token": "<image>",
        "num_image_tokens": (OV_TILE_PX // OV_PATCH_PX) ** 2,
        "processor_class": "LlavaOnevisionProcessor",
        "video_token": "<video>",
        "vision_aspect_ratio": "anyres_max_9",
        "vision_feature_select_strategy": "full",
    }
    (path / "processor_config.json").write_text(json.dumps(proc, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": OV_CHAT_TEMPLATE}, indent=2))
    (path / "chat_template.jinja").unlink(missing_ok=True)  # 5.x writes it; the 4.x hub repo has chat_template.json
    return path


# ---------------------------------------------------------------------------------------------- Qwen2.5-VL

# chat_template.json of Qwen/Qwen2.5-VL-7B-Instruct
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_MIN_PIXELS = 56 * 56  # real: 3136
QWEN_MAX_PIXELS = 128 * 128  # real: 12_845_056; tiny: at most ~20 merged tokens


def tiny_qwen25vl(seed: int = 0, attn: str = "sdpa"):
    """(model, image_processor, tokenizer): Qwen2_5_VLForConditionalGeneration shaped like Qwen2.5-VL-7B-Instruct.

    14-px patches, 2 x 2 merge, temporal patch 2, window attention (window 112 px, one full-attention block),
    M-RoPE with mrope_section summing to head_dim / 2, GQA 4 heads / 2 KV heads, the checkpoint's special tokens
    and chat template; min/max_pixels scaled down.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(seed)
    tok = _qwen2_style_tokenizer(QWEN_SPECIALS, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    tok.chat_template = QWEN25VL_CHAT_TEMPLATE
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=QWEN_MIN_PIXELS,
        max_pixels=QWEN_MAX_PIXELS,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        },
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tok),
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [1, 1, 2]},
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "bos_token_id": ids["<|endoftext|>"],
            "use_sliding_window": False,
            "tie_word_embeddings": False,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.config.text_config._attn_implementation = attn
    model.config._attn_implementation = attn
    model.config.vision_config._attn_implementation = attn
    return model.eval(), image_processor, tok


def save_tiny_qwen25vl(path: Path, seed: int = 0) -> Path:
    """Save a tiny Qwen2.5-VL in the file layout of Qwen/Qwen2.5-VL-7B-Instruct (made with 4.x)."""
    model, _, tok = tiny_qwen25vl(seed)  # the processor config is written as the hub has it
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    pre = {
        "min_pixels": QWEN_MIN_PIXELS,
        "max_pixels": QWEN_MAX_PIXELS,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25VL_CHAT_TEMPLATE}, indent=2))
    (path / "chat_template.jinja").unlink(missing_ok=True)
    return path
