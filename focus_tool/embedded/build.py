r"""Build the embedded model's tokenizer, processor and (untrained) ``LlavaForConditionalGeneration``.

Everything is a stock transformers object saved in the hub file layout, so the checkpoint loads through the
same ``from_pretrained`` path as ``llava-hf/llava-1.5-7b-hf``:
- tokenizer: a closed word-level vocabulary (``tokenizers`` WordLevel, whitespace + punctuation split);
- image processor: ``LlavaImageProcessorPil`` at 96 px (pad-to-square is done by the adapter, as for LLaVA-1.5);
- chat template: LLaVA-1.5's "USER: <image>\n{text} ASSISTANT:";
- model: CLIP-style vision tower (96 px, 8-px patches -> 12 x 12 tokens) + 2-layer MLP projector + Llama LM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from focus_tool.data import synthetic as syn
from focus_tool.prompts import LETTER_INSTRUCTION
from focus_tool.steps.targets import DEFAULT_EXTRACT_PROMPT

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")
IMAGE_TOKEN = "<image>"
ANSWER_SUFFIX = LETTER_INSTRUCTION
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True, kw_only=True)
class EmbeddedArch:
    """Sizes of the embedded model (about 3.5 M parameters, 14 MB in float32)."""

    image_size: int = 96  # model input side, px
    patch_size: int = 8  # -> 12 x 12 image tokens
    vision_width: int = 192
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 192
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 4
    max_positions: int = 512


def corpus_words() -> list[str]:
    """Every word and punctuation mark the synthetic world's prompts and answers use."""
    texts = [DEFAULT_EXTRACT_PROMPT, ANSWER_SUFFIX, "USER: ASSISTANT: I need the info about all and . , ; ( ) A B C D"]
    colors = list(syn.CARD_COLORS)
    for c in colors:
        for kind in syn.KINDS:
            texts.append(syn.question_text(kind, (f"{c} card", f"{colors[0]} card")))
        texts.append(syn.existence_question(f"{c} card"))
    texts += [" ".join(syn.PIP_COLORS), " ".join(syn.COUNT_WORDS), " ".join(syn.SIDES), "Yes No"]
    words: list[str] = []
    for t in texts:
        for w in _WORD.findall(t):
            if w not in words:
                words.append(w)
    return words


def build_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` over the closed vocabulary, with LLaVA's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *corpus_words()])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies punctuation
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=512,
    )
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(arch: EmbeddedArch | None = None) -> Any:
    """A stock ``LlavaProcessor`` (PIL image processor at ``image_size``, our tokenizer and chat template)."""
    from transformers import LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    arch = arch or EmbeddedArch()
    image_processor = LlavaImageProcessorPil(
        size={"shortest_edge": arch.image_size},
        crop_size={"height": arch.image_size, "width": arch.image_size},
        do_center_crop=True,
        do_pad=False,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=build_tokenizer(),
        patch_size=arch.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(
    vocab_size: int, image_token_id: int, pad_id: int, bos_id: int, eos_id: int, arch: EmbeddedArch | None = None
) -> Any:
    """An untrained ``LlavaForConditionalGeneration`` of the embedded size."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    arch = arch or EmbeddedArch()
    grid = arch.image_size // arch.patch_size
    config = LlavaConfig(  # type: ignore[call-arg]
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": arch.vision_width,
            "intermediate_size": arch.vision_width * 2,
            "num_hidden_layers": arch.vision_layers,
            "num_attention_heads": arch.vision_heads,
            "image_size": arch.image_size,
            "patch_size": arch.patch_size,
            "projection_dim": arch.vision_width,
        },
        text_config={
            "model_type": "llama",
            "hidden_size": arch.text_width,
            "intermediate_size": arch.text_width * 2,
            "num_hidden_layers": arch.text_layers,
            "num_attention_heads": arch.text_heads,
            "num_key_value_heads": arch.text_kv_heads,
            "vocab_size": vocab_size,
            "max_position_embeddings": arch.max_positions,
            "pad_token_id": pad_id,
            "bos_token_id": bos_id,
            "eos_token_id": eos_id,
            "tie_word_embeddings": False,
            # 1/sqrt(width): HF's default 0.02 is far below it at width 192, which left attention uniform
            # (q.k ~ 0) for thousands of steps: the LM ignored the question and the image
            "initializer_range": arch.text_width**-0.5,
        },
        image_token_id=image_token_id,
        image_seq_length=grid * grid,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        initializer_range=arch.text_width**-0.5,
    )
    return LlavaForConditionalGeneration(config)


def save_untrained(out_dir: Path, arch: EmbeddedArch | None = None) -> None:
    """Write an untrained checkpoint (tests, and the starting point of training) in the hub layout."""
    processor = build_processor(arch)
    tok = processor.tokenizer
    model = build_model(
        len(tok), tok.convert_tokens_to_ids(IMAGE_TOKEN), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, arch
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
