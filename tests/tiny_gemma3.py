"""A tiny random Gemma 3 (``Gemma3ForConditionalGeneration``) shaped like google/gemma-3-4b-it, built from configs
(no downloads) and saved in that checkpoint's hub layout (made with transformers 4.x)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.tiny_models import _CORPUS

# chat_template.json of google/gemma-3-4b-it (the tokenizer_config.json holds the same template)
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)
# Gemma 3's specials in id order (real ids: 0-4, 105, 106, 255999, 256000, 262144; tiny: consecutive)
GEMMA3_SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]
GEMMA3_EXTRA_TOKENS = {
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}
G3_PATCH_PX = 14  # as the real SigLIP-so400m/14
G3_IMAGE_PX = 224  # real: 896 (64 x 64 patches average-pooled 4 x 4 -> 16 x 16 = 256 soft tokens)
G3_SIDE = 8  # tiny: 16 x 16 patches pooled 2 x 2 -> 8 x 8 = 64 soft tokens (the 896-px build pools 4 x 4)
G3_SLIDING_WINDOW = 128  # real: 1024 (4 images' worth of soft tokens); tiny: 2 images' worth
# Gemma3Processor.images_kwargs: the pan-and-scan settings the processor uses when preprocessor_config.json says null
G3_PAN_AND_SCAN = {
    "pan_and_scan_min_crop_size": 256,
    "pan_and_scan_max_num_crops": 4,
    "pan_and_scan_min_ratio_to_activate": 1.2,
}
_GEMMA_WORDS = [
    "Here is the original image and here are some crops to help you see better",
    "<start_of_turn>user\n\nmodel\nuser\nmodel\n\n",
    "What is the color of the dots on the red card? Is there a cat in the image?",
]


def gemma_style_tokenizer(*, vocab_size: int = 600):
    """A small SentencePiece-style BPE like Gemma 3's ``tokenizer.json``: spaces normalised to ``▁`` (no dummy
    prefix, no pre-split at run time), byte fallback (``<0x00>`` .. ``<0xFF>``), ``<bos>`` prepended, Gemma's special
    tokens, loaded as ``GemmaTokenizer``. Merges are trained per ``▁``-word, so "red card" is ``▁red`` ``▁card``
    after a space, as in the real vocabulary."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    bytes_ = [f"<0x{i:02X}>" for i in range(256)]
    trainer_tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*GEMMA3_SPECIALS, *bytes_],
        show_progress=False,
    )
    trainer_tok.train_from_iterator((_CORPUS + _GEMMA_WORDS) * 4, trainer=trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = GemmaTokenizer(
        vocab=model["vocab"],
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        extra_special_tokens=dict(GEMMA3_EXTRA_TOKENS),
    )
    tok.add_special_tokens(
        {
            "additional_special_tokens": [AddedToken(s, special=True, normalized=False) for s in GEMMA3_SPECIALS[5:]],
        }
    )
    tok.chat_template = GEMMA3_CHAT_TEMPLATE
    return tok


def tiny_gemma3(
    seed: int = 0,
    attn: str = "sdpa",
    *,
    image_px: int = G3_IMAGE_PX,
    side: int = G3_SIDE,
    pan_and_scan: bool = False,
):
    """(model, image_processor, tokenizer) shaped like google/gemma-3-4b-it, widths and depths scaled down.

    Same processor settings (square resize to ``image_px`` without padding, bilinear, mean / std 0.5; pan-and-scan
    off as the hub config leaves it, on with the processor's defaults when ``pan_and_scan``), same special tokens
    and chat template, a SentencePiece-style tokenizer (:func:`gemma_style_tokenizer`). SigLIP tower with 14-px
    patches and no head; the projector average-pools the patch grid to ``side x side`` soft tokens (224 px: 16 x 16
    patches pooled 2 x 2 -> 64 tokens, to keep the tests fast; ``image_px=896, side=16``: 64 x 64 patches pooled
    4 x 4 -> 256, as the real checkpoints). Gemma 3 LM: hidden 32, 6 layers in the
    real 5 sliding : 1 full pattern (window 128), GQA 4 heads / 2 KV heads with head_dim 16 (heads x head_dim !=
    hidden, as the real 4B's 8 x 256 vs 2560), q/k RMSNorm, local / global RoPE bases and the global linear scaling,
    tied embeddings.
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    torch.manual_seed(seed)
    tok = gemma_style_tokenizer()
    pas = {"do_pan_and_scan": True, **G3_PAN_AND_SCAN} if pan_and_scan else {}
    image_processor = Gemma3ImageProcessorPil(
        size={"height": image_px, "width": image_px},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        resample=2,  # PIL bilinear, as the hub preprocessor_config.json
        **pas,
    )
    ids = {s: tok.convert_tokens_to_ids(s) for s in GEMMA3_SPECIALS}
    config = Gemma3Config(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": image_px,
            "patch_size": G3_PATCH_PX,
            "vision_use_head": False,
            "layer_norm_eps": 1e-6,
        },
        text_config={
            "model_type": "gemma3_text",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 6,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "vocab_size": len(tok),
            "max_position_embeddings": 131_072,
            "sliding_window": G3_SLIDING_WINDOW,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "pad_token_id": ids["<pad>"],
            "eos_token_id": [ids["<eos>"], ids["<end_of_turn>"]],
            "bos_token_id": ids["<bos>"],
            "tie_word_embeddings": True,
        },
        mm_tokens_per_image=side * side,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        tie_word_embeddings=True,
    )
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # the projector starts at zeros (so every image token would embed alike): randomise it
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.5)
    model.generation_config.eos_token_id = [ids["<eos>"], ids["<end_of_turn>"]]
    model.generation_config.pad_token_id = ids["<pad>"]
    model.config.text_config._attn_implementation = attn
    model.config._attn_implementation = attn
    model.config.vision_config._attn_implementation = attn
    return model.eval(), image_processor, tok


def save_tiny_gemma3(path: Path, seed: int = 0, *, pan_and_scan: bool = False) -> Path:
    """Save a tiny Gemma 3 in the file layout of google/gemma-3-4b-it.

    config.json + safetensors + generation_config.json; tokenizer files with ``tokenizer_class`` GemmaTokenizer and
    the named boi / eoi / image tokens; preprocessor_config.json naming Gemma3ImageProcessor and Gemma3Processor with
    the pan-and-scan fields null (as on the hub; ``pan_and_scan`` writes ``do_pan_and_scan: true`` instead);
    processor_config.json (image_seq_length); chat_template.json.
    """
    model, image_processor, tok = tiny_gemma3(seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    tok_cfg.update(tokenizer_class="GemmaTokenizer", **GEMMA3_EXTRA_TOKENS)
    (path / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    pre = {
        "do_convert_rgb": None,
        "do_normalize": True,
        "do_pan_and_scan": True if pan_and_scan else None,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "Gemma3ImageProcessor",
        "image_seq_length": int(model.config.mm_tokens_per_image),
        "image_std": [0.5, 0.5, 0.5],
        "pan_and_scan_max_num_crops": None,
        "pan_and_scan_min_crop_size": None,
        "pan_and_scan_min_ratio_to_activate": None,
        "processor_class": "Gemma3Processor",
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": dict(image_processor.size),
    }
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    proc = {"image_seq_length": int(model.config.mm_tokens_per_image), "processor_class": "Gemma3Processor"}
    (path / "processor_config.json").write_text(json.dumps(proc, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": GEMMA3_CHAT_TEMPLATE}, indent=2))
    (path / "chat_template.jinja").unlink(missing_ok=True)  # 5.x writes it; the 4.x hub repo has chat_template.json
    return path
