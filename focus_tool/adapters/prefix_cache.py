"""Encoded-image reuse: a small LRU of image-prefix KV caches, keyed by image content.

A relevance prefill is ``[system/user text] [image tokens] [question]``. Everything up to the last image token
depends only on the image and the fixed template, so for a second question (or a second target) on the same image
the prefix's keys and values can be reused and only the question's tokens run through the language model. The
cached values are the ones a full prefill computes (causal attention: a position never sees later ones), so the
relevance map is unchanged; the test suite checks it against a full prefill.

Used by adapters whose positions of the text after the image follow from the cache length (LLaVA-1.5, the
embedded model, LLaVA-OneVision). Qwen2.5-VL keeps M-RoPE offsets as model state between calls, so it does not
opt in. Only the search prefill uses it; crops (existence checks) are new images every time.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image


def image_digest(image: Image.Image) -> str:
    """Content key of a decoded image: its mode, size and pixels (BLAKE2b, 128 bits)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    rows = max(1, (1 << 22) // max(1, image.width * len(image.getbands())))  # ~4 MB stripes: never the whole copy
    for y in range(0, image.height, rows):  # the stripes' bytes concatenate to image.tobytes(): the same digest
        h.update(image.crop((0, y, image.width, min(image.height, y + rows))).tobytes())
    return h.hexdigest()


def _trim(cache: Any, length: int) -> None:
    """Keep the first ``length`` positions of every layer of a transformers 5.x ``DynamicCache``."""
    for layer in cache.layers:  # crop()'s argument changed meaning across 5.x releases; slice directly
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


@functools.cache
def _cache_kwarg_name(model_class: type) -> str:
    forward = model_class.forward  # type: ignore[attr-defined]
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """The forward keyword that passes a KV cache to ``model``: ``cache`` from transformers 5.24 on, where
    ``past_key_values`` is deprecated (announced for removal in 5.40), ``past_key_values`` before. Looked up once
    per model class: this runs on every cached prefill.
    """
    return {_cache_kwarg_name(type(model)): cache}  # type: ignore[arg-type]  # (mypy: classes are hashable)


def output_cache(out: Any) -> Any:
    """The KV cache of a model output: ``out.cache`` from transformers 5.24 on, ``out.past_key_values`` before."""
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


@dataclass
class PrefixRun:
    """One prefill run through the cache."""

    out: Any  # the model output of the (suffix) forward; its cache (:func:`output_cache`) holds prefix + suffix
    hit: bool  # the image prefix came from the cache
    reused_tokens: int  # prefix tokens not recomputed (0 on a miss)
    release: Any  # call after reading the cache: trims it back to the prefix for the next use


class ImagePrefixCache:
    """LRU of (image digest, prefix token ids) -> the prefix's KV cache. Thread-safe; at most ``max_entries``."""

    def __init__(self, max_entries: int = 2) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def run(self, model: Any, enc: Mapping[str, Any], image: Image.Image, image_token_id: int) -> PrefixRun:
        """Forward ``enc`` (one sequence, with its image inputs) reusing the image prefix when cached.

        ``enc`` is what the processor returned: ``input_ids`` (1, N), ``attention_mask`` (1, N) and the image
        tensors (``pixel_values`` and, for some models, ``image_sizes``), which only the prefix needs.
        """
        ids = enc["input_ids"]  # (1, N)
        if ids.shape[0] != 1:
            raise ValueError("the image-prefix cache runs one sequence at a time")
        img_pos = torch.nonzero(ids[0] == image_token_id).flatten()
        if len(img_pos) == 0:
            raise ValueError("the prompt has no image token")
        cut = int(img_pos[-1]) + 1  # prefix = everything up to and including the last image token
        if cut >= ids.shape[1]:
            raise ValueError("the prompt has no text after the image")
        key = (image_digest(image), tuple(int(t) for t in ids[0, :cut]))
        with self._lock:
            cache = self._entries.pop(key, None)  # taken out while in use; :meth:`PrefixRun.release` puts it back
        hit = cache is not None
        if cache is None:
            prefix = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
            pre = model(input_ids=ids[:, :cut], attention_mask=enc["attention_mask"][:, :cut], use_cache=True, **prefix)
            cache = output_cache(pre)
        try:
            out = model(
                input_ids=ids[:, cut:],
                attention_mask=enc["attention_mask"],
                **cache_kwargs(model, cache),
                use_cache=True,
                logits_to_keep=1,
            )
        except Exception:
            raise  # the cache was taken out of the LRU and is dropped: a failed run never leaves a partial entry

        def release() -> None:
            _trim(cache, cut)  # back to the image prefix (a slice: tensors already read stay whole)
            with self._lock:
                self._entries[key] = cache
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)

        with self._lock:
            self.hits += int(hit)
            self.misses += int(not hit)
        return PrefixRun(out=out, hit=hit, reused_tokens=cut if hit else 0, release=release)
