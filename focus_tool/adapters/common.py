"""Helpers shared by the adapters that build their prompts themselves (OneVision, Qwen2.5-VL).

Nothing here knows a model family: chat-template lookup in a checkpoint, image-token expansion in a prompt string,
target-token positions from character offsets, and the first token of a reply word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from focus_tool.adapters.base import ForwardCounter
from focus_tool.errors import TargetNotPlaced

_PUNCT_OR_SPACE = re.compile(r"^[\W_▁Ġ]*$")


def load_chat_template(path: str | Path, tokenizer: Any) -> str | None:
    """The checkpoint's chat template: the tokenizer's own, else chat_template.jinja / chat_template.json.

    Hub repositories made with transformers 4.x keep the processor's template in ``chat_template.json``; 5.x writes
    ``chat_template.jinja``; some put it in ``processor_config.json``. A local folder or a cached hub id both work.
    """
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.chat_template)
    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json", "processor_config.json"):
        file = cached_file(
            str(path),
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if file is None:
            continue
        text = Path(file).read_text()
        if name.endswith(".jinja"):
            return text
        template = json.loads(text).get("chat_template")
        if isinstance(template, str) and template:
            return template
    return None


def expand_image_tokens(prompt: str, image_token: str, counts: Sequence[int]) -> str:
    """Replace the i-th ``image_token`` of ``prompt`` by ``counts[i]`` copies (what the stock processors do).

    Raises:
        ValueError: if the prompt holds a different number of image placeholders than ``counts``.
    """
    parts = prompt.split(image_token)
    if len(parts) - 1 != len(counts):
        raise ValueError(f"prompt has {len(parts) - 1} image placeholders but {len(counts)} images were given")
    out = parts[0]
    for n, rest in zip(counts, parts[1:], strict=True):
        out += image_token * n + rest
    return out


def keeps_content_order(prompt: str, parts: Sequence[str | None], image_token: str) -> bool:
    """Whether a templated ``prompt`` holds ``parts`` (text, or None for an image placeholder) in their given order.

    Some chat templates render every image of a turn before its text (llava-hf's LLaVA-OneVision template does);
    then an interleaved multi-image prompt loses its "image, caption, image, caption" order.
    """
    pos = 0
    for part in parts:
        needle = image_token if part is None else part
        i = prompt.find(needle, pos)
        if i < 0:
            return False
        pos = i + len(needle)
    return True


def target_positions(tokenizer: Any, expanded_prompt: str, target: str, input_ids: torch.Tensor) -> list[int]:
    """Sequence positions of the tokens overlapping the last occurrence of ``target`` in an expanded prompt.

    ``expanded_prompt`` already holds every image token, so its tokens align 1:1 with ``input_ids`` (N,)
    (docs/method.md, Stage II). Whitespace/punctuation-only tokens are dropped.
    """
    start = expanded_prompt.rfind(target)
    if start < 0 or not target.strip():
        raise TargetNotPlaced(f"the target {target!r} does not occur in the prompt")
    end = start + len(target)
    enc = tokenizer(expanded_prompt, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(ids) != len(input_ids) or any(int(a) != int(b) for a, b in zip(ids, input_ids.tolist(), strict=True)):
        raise TargetNotPlaced(f"could not align the target {target!r} with the model's tokens")
    unk = getattr(tokenizer, "unk_token_id", None)
    positions, unknown = [], 0
    for i, (tid, (a, b)) in enumerate(zip(ids, offsets, strict=True)):
        if b <= start or a >= end:
            continue
        if _PUNCT_OR_SPACE.match(tokenizer.convert_ids_to_tokens(tid) or ""):
            continue
        positions.append(i)
        unknown += int(tid == unk)
    if not positions:
        raise TargetNotPlaced(f"the tokenizer produced no word token for the target {target!r}")
    if unk is not None and unknown == len(positions):
        raise TargetNotPlaced(f"the model's vocabulary has no token for the target {target!r}; use words it knows")
    return positions


def n_images(enc: Any) -> int:
    """Images in an encoded batch (vision-tower inputs): one ``image_grid_thw`` row (Qwen) or ``pixel_values``
    entry (LLaVA: (B, 3, H, W); OneVision: (B, tiles, 3, H, W)) per image; 0 without pixel inputs.
    """
    if "image_grid_thw" in enc:
        return int(enc["image_grid_thw"].shape[0])
    if "pixel_values" in enc:
        return int(enc["pixel_values"].shape[0])
    return 0


def reply_first_token(tokenizer: Any, prompt: str, word: str) -> int:
    """Id of the first token of ``word`` written right after ``prompt`` (the generation prompt of a chat template)."""
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + word, add_special_tokens=False)["input_ids"]
    return int(full[len(base)]) if len(full) > len(base) else int(full[-1])


def reply_log_likelihoods(
    model: Any,
    tokenizer: Any,
    counter: ForwardCounter,
    encode: Callable[[str], Any],
    prompt: str,
    options: Sequence[str],
) -> torch.Tensor:
    """(K,) mean log-probability of each option's tokens written right after ``prompt`` (the assistant reply).

    ``prompt`` ends with the chat template's generation prompt; ``encode(text)`` returns the model inputs of
    ``text`` with the caller's images (batch of one). Each (prompt + option) runs as one full sequence under
    ``torch.inference_mode``; only the last ``n_option + 1`` positions' logits are materialised; one pass counted
    per option. The option's tokens are those the prompt + option text adds to the prompt's tokens.

    Raises:
        ValueError: if an option adds no token or the prompt's tokens are not a prefix of prompt + option.
    """
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for option in options:
        ids = tokenizer(prompt + option.strip(), add_special_tokens=False)["input_ids"]
        n_opt = len(ids) - len(base)
        if n_opt < 1 or ids[: len(base)] != base:
            raise ValueError(f"option {option!r} does not extend the prompt by whole tokens")
        enc = encode(prompt + option.strip())
        target = enc["input_ids"][0, -n_opt:]  # (n_opt,)
        if target.tolist() != ids[len(base) :]:
            raise RuntimeError(f"the encoded prompt does not end with the tokens of option {option!r}")
        with torch.inference_mode():
            logits = model(**enc, use_cache=False, logits_to_keep=n_opt + 1).logits[0, :-1].float()  # (n_opt, V)
        counter.add(1, int(enc["attention_mask"].sum()), images=n_images(enc))
        scores.append(torch.log_softmax(logits, dim=-1).gather(-1, target[:, None]).mean())
    return torch.stack(scores).cpu()


def option_token_ids(
    tokenizer: Any, prompt: str, options: Sequence[str], separator: str = ""
) -> list[list[int]] | None:
    """Each option's tokens written right after ``prompt`` (``separator`` + option), or None when some option's
    tokens of prompt + option do not extend the prompt's tokens (a merge across the boundary: no shared prefix).
    """
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    out = []
    for option in options:
        ids = tokenizer(prompt + separator + option.strip(), add_special_tokens=False)["input_ids"]
        if len(ids) <= len(base) or ids[: len(base)] != base:
            return None
        out.append([int(t) for t in ids[len(base) :]])
    return out


ContinuationInputs = Callable[[int, int, int], dict[str, Any]]
"""``(rows, prefix_len, new_len) -> extra model inputs`` of a continuation (e.g. M-RoPE position ids)."""


def shared_prefix_log_likelihoods(
    model: Any,
    counter: ForwardCounter,
    enc: Any,
    option_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    images: int,
    continuation_inputs: ContinuationInputs | None = None,
) -> torch.Tensor:
    """(K,) mean log-probability of each option's tokens after the prompt ``enc``, from ONE prefill of the prompt.

    The prompt (batch of one, with its pixel inputs) is prefilled once with the cache kept; its last logits give
    every option's first token. The K options' remaining tokens then run as one right-padded batch of
    continuations on the cache repeated K times (causal attention: a real token never sees the padding after it,
    and every row's positions continue the prefix's). Counts one pass (the prefill, ``images`` images) and K
    continuations of their own tokens.
    """
    from focus_tool.adapters.prefix_cache import cache_kwargs, output_cache

    n_prefix = int(enc["input_ids"].shape[1])
    with torch.inference_mode():
        out = model(**enc, use_cache=True, logits_to_keep=1)
        counter.add(1, int(enc["attention_mask"].sum()), images=images)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # (V,)
        k, width = len(option_ids), max(len(o) for o in option_ids) - 1
        rest: torch.Tensor | None = None  # (K, width, V) log-probs after each option token but the last
        if width > 0:
            device = enc["input_ids"].device
            cont = torch.full((k, width), pad_id, dtype=torch.long, device=device)  # (K, width)
            mask = torch.zeros((k, width), dtype=enc["attention_mask"].dtype, device=device)
            for i, ids in enumerate(option_ids):
                cont[i, : len(ids) - 1] = torch.tensor(ids[:-1], dtype=torch.long)
                mask[i, : len(ids) - 1] = 1
            cache = output_cache(out)
            cache.batch_repeat_interleave(k)
            extra = continuation_inputs(k, n_prefix, width) if continuation_inputs is not None else {}
            logits = model(
                input_ids=cont,
                attention_mask=torch.cat([enc["attention_mask"].expand(k, -1), mask], dim=1),
                **cache_kwargs(model, cache),
                use_cache=True,
                **extra,
            ).logits.float()  # (K, width, V)
            rest = torch.log_softmax(logits, dim=-1)
            counter.add_continuation(k, int(mask.sum()), n_prefix)
    scores = []
    for i, ids in enumerate(option_ids):
        tail = [rest[i, j - 1, ids[j]] for j in range(1, len(ids))] if rest is not None else []
        scores.append(torch.stack([first[ids[0]], *tail]).mean())
    return torch.stack(scores).cpu()
