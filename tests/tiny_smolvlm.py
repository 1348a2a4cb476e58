"""A tiny random SmolVLM, built from configs (no downloads) and saved in the hub layout of its real checkpoints:
``flavor="smolvlm"`` like HuggingFaceTB/SmolVLM2-256M-Video-Instruct (``SmolVLMForConditionalGeneration``),
``flavor="idefics3"`` like HuggingFaceTB/SmolVLM-256M-Instruct (``Idefics3ForConditionalGeneration``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from tests.tiny_models import _CORPUS

Flavor = Literal["smolvlm", "idefics3"]

# chat_template.json of HuggingFaceTB/SmolVLM-256M-Instruct (SmolVLM2's adds a video branch, not used here)
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# SmolLM2's own specials first (ids 0..2 on the hub), then the added tokens in the hub's order (49152...)
SMOLLM2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SMOLVLM_ADDED = [
    "<global-img>",
    *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)],
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
]
SMOLVLM_EXTRA_TOKENS = {  # tokenizer_config.json of the SmolVLM2 checkpoints names these
    "fake_image_token": "<fake_token_around_image>",
    "image_token": "<image>",
    "global_image_token": "<global-img>",
    "end_of_utterance_token": "<end_of_utterance>",
}
SMOL_TILE_PX = 64  # real: 512 (max_image_size.longest_edge); tiny: 64-px tiles of 4-px patches -> 16 x 16
SMOL_PATCH_PX = 4  # real: 16
SMOL_SCALE = 4  # pixel shuffle factor, as the 256M / 500M: 16 x 16 patches -> 4 x 4 = 16 tokens (real: 8 x 8 = 64)
SMOL_TOKENS_PER_TILE = (SMOL_TILE_PX // SMOL_PATCH_PX // SMOL_SCALE) ** 2
SMOL_LONGEST_EDGE = 4 * SMOL_TILE_PX  # real: size.longest_edge 2048 = 4 x 512


def smollm2_style_tokenizer(vocab_size: int = 400, *, layout_specials: bool = True):
    """A small byte-level BPE with SmolLM2's pre-tokenizer (single digits, then GPT-2 byte-level with its regex),
    its specials and SmolVLM's added tokens (trained offline on the tests' corpus). ``layout_specials=False``: only
    ``<fake_token_around_image>``, ``<image>``, ``<end_of_utterance>`` are added, as in SmolVLM-Instruct's
    tokenizer (its row / column / global tags are plain text)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in SMOLLM2_SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_CORPUS, "Assistant: Yes. User: No.\n\n"] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        padding_side="left",
        model_max_length=8192,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        extra_special_tokens=SMOLVLM_EXTRA_TOKENS if layout_specials else {},
    )
    added = SMOLVLM_ADDED if layout_specials else ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    fast.add_special_tokens({"additional_special_tokens": added})
    return fast


def tiny_smolvlm(
    seed: int = 0,
    attn: str = "sdpa",
    flavor: Flavor = "smolvlm",
    tile_px: int = SMOL_TILE_PX,
    patch_px: int = SMOL_PATCH_PX,
    layout_specials: bool = True,
):
    """(model, image_processor, tokenizer) shaped like SmolVLM(2)-256M, widths and depths scaled down.

    Same processor settings (image splitting, size.longest_edge = 4 tiles, tiles of ``tile_px`` (64 px; 512 on the
    checkpoints) of ``patch_px`` patches (4; 16), Lanczos, mean / std 0.5), same special tokens and chat template;
    SigLIP-style tower, pixel shuffle 4, linear connector; Llama LM (SmolLM2) with hidden 32, 3 layers, GQA 4 heads /
    2 KV heads, rope_theta 1e5.
    """
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

    torch.manual_seed(seed)
    tok = smollm2_style_tokenizer(layout_specials=layout_specials)
    tok.chat_template = SMOLVLM_CHAT_TEMPLATE
    ip_class = SmolVLMImageProcessorPil if flavor == "smolvlm" else Idefics3ImageProcessorPil
    image_processor = ip_class(
        do_image_splitting=True,
        size={"longest_edge": 4 * tile_px},
        max_image_size={"longest_edge": tile_px},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=1,
    )
    ids = {s: tok.convert_tokens_to_ids(s) for s in [*SMOLLM2_SPECIALS, "<image>", "<end_of_utterance>"]}
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": tile_px,
        "patch_size": patch_px,
    }
    text = {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "vocab_size": len(tok),
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "pad_token_id": ids["<|im_end|>"],
        "bos_token_id": ids["<|im_start|>"],
        "eos_token_id": ids["<end_of_utterance>"],
        "tie_word_embeddings": False,
    }
    config_class, model_class = (
        (SmolVLMConfig, SmolVLMForConditionalGeneration)
        if flavor == "smolvlm"
        else (Idefics3Config, Idefics3ForConditionalGeneration)
    )
    config = config_class(
        vision_config=vision,
        text_config=text,
        scale_factor=SMOL_SCALE,
        image_token_id=ids["<image>"],
        tie_word_embeddings=False,
    )
    model = model_class(config)
    for c in (model.config, model.config.text_config, model.config.vision_config):
        c._attn_implementation = attn
    return model.eval(), image_processor, tok


def save_tiny_smolvlm(path: Path, seed: int = 0, flavor: Flavor = "smolvlm") -> Path:
    """Save a tiny SmolVLM in its checkpoint's file layout (made with transformers 4.x).

    config.json + safetensors; tokenizer files with ``tokenizer_class`` GPT2Tokenizer (SmolLM2's) and no chat
    template in them; preprocessor_config.json naming SmolVLMImageProcessor / SmolVLMProcessor (Idefics3... for the
    v1 flavor); processor_config.json (image_seq_len); chat_template.json.
    """
    model, image_processor, tok = tiny_smolvlm(seed, flavor=flavor)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.chat_template = None
    tok.save_pretrained(path)
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    tok_cfg["tokenizer_class"] = "GPT2Tokenizer"
    tok_cfg.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    image_processor.save_pretrained(path)
    name = "SmolVLM" if flavor == "smolvlm" else "Idefics3"
    pre = json.loads((path / "preprocessor_config.json").read_text())
    pre.update(image_processor_type=f"{name}ImageProcessor", processor_class=f"{name}Processor")
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    proc = {"image_seq_len": SMOL_TOKENS_PER_TILE, "processor_class": f"{name}Processor"}
    (path / "processor_config.json").write_text(json.dumps(proc, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": SMOLVLM_CHAT_TEMPLATE}, indent=2))
    (path / "chat_template.jinja").unlink(missing_ok=True)
    return path
