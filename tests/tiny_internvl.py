"""A tiny random InternVL3 (``InternVLForConditionalGeneration``) shaped like OpenGVLab/InternVL3-1B-hf, built from
configs (no downloads) and saved in that checkpoint's hub layout (made with transformers 4.x)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.tiny_models import _qwen2_style_tokenizer

# chat_template of OpenGVLab/InternVL3-*-hf (transformers' convert_internvl_weights_to_hf.py writes it)
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen2.5's own specials, then what the conversion adds (in that order: <img> </img> <IMG_CONTEXT> <quad> ...)
INTERNVL_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
]
INTERNVL_EXTRA_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
IVL_TILE_PX = 112  # real: 448; tiny: 112-px tiles of 14-px patches -> 8 x 8 -> pixel shuffle 0.5 -> 4 x 4 tokens
IVL_PATCH_PX = 14
IVL_TOKENS_PER_TILE = (IVL_TILE_PX // IVL_PATCH_PX // 2) ** 2  # real: 256
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def tiny_internvl(seed: int = 0, attn: str = "sdpa", tile_px: int = IVL_TILE_PX):
    """(model, image_processor, tokenizer) shaped like InternVL3-1B-hf, widths and depths scaled down.

    Same processor settings (GotOcr2 tiling, min 1 / max 12 tiles, thumbnail, ImageNet mean/std, bicubic; tiles of
    ``tile_px``, 112 px by default, 448 on the real checkpoints), same special tokens (``<img>``, ``</img>``,
    ``<IMG_CONTEXT>`` with the tokenizer's named extra tokens) and chat template; InternViT-style tower with CLS
    token, qkv bias and layer scale, pixel shuffle 0.5, MLP projector; Qwen2 LM with hidden 32, 3 layers, GQA 4
    heads / 2 KV heads, tied embeddings (as the 1B).
    """
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    torch.manual_seed(seed)
    tok = _qwen2_style_tokenizer(
        INTERNVL_SPECIALS,
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "extra_special_tokens": INTERNVL_EXTRA_TOKENS},
    )
    tok.add_special_tokens({"additional_special_tokens": INTERNVL_SPECIALS[1:]})
    tok.chat_template = INTERNVL_CHAT_TEMPLATE
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": tile_px, "width": tile_px},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        min_patches=1,
        max_patches=12,
    )
    ids = {s: tok.convert_tokens_to_ids(s) for s in INTERNVL_SPECIALS}
    config = InternVLConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": [tile_px, tile_px],
            "patch_size": [IVL_PATCH_PX, IVL_PATCH_PX],
            "attention_bias": True,  # InternViT-300M: qkv_bias
            "use_qk_norm": False,
            "norm_type": "layer_norm",
            "layer_scale_init_value": 0.1,
            "use_absolute_position_embeddings": True,
            "use_mean_pooling": True,
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
            "pad_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "bos_token_id": ids["<|endoftext|>"],
            "use_sliding_window": False,
            "tie_word_embeddings": True,
        },
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=(tile_px // IVL_PATCH_PX // 2) ** 2,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    model = InternVLForConditionalGeneration(config)
    model.config.text_config._attn_implementation = attn
    model.config._attn_implementation = attn
    model.config.vision_config._attn_implementation = attn
    return model.eval(), image_processor, tok


def save_tiny_internvl(path: Path, seed: int = 0) -> Path:
    """Save a tiny InternVL3 in the file layout of OpenGVLab/InternVL3-1B-hf.

    config.json + safetensors; tokenizer files with ``tokenizer_class`` Qwen2Tokenizer and the named extra tokens;
    preprocessor_config.json naming GotOcr2ImageProcessorFast and InternVLProcessor with ``crop_to_patches: false``
    (the processor turns tiling on, not the image processor config); processor_config.json (image_seq_length);
    chat_template.json.
    """
    model, image_processor, tok = tiny_internvl(seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    tok_cfg["tokenizer_class"] = "Qwen2Tokenizer"
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    image_processor.save_pretrained(path)
    pre = json.loads((path / "preprocessor_config.json").read_text())
    pre.update(image_processor_type="GotOcr2ImageProcessorFast", processor_class="InternVLProcessor")
    pre["crop_to_patches"] = False
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    proc = {"image_seq_length": IVL_TOKENS_PER_TILE, "processor_class": "InternVLProcessor"}
    (path / "processor_config.json").write_text(json.dumps(proc, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": INTERNVL_CHAT_TEMPLATE}, indent=2))
    (path / "chat_template.jinja").unlink(missing_ok=True)  # 5.x writes it; the 4.x hub repo has chat_template.json
    return path
