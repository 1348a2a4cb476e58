"""The base of the adapters that load an image processor and a tokenizer and build their prompts themselves.

:class:`ChatTemplateAdapter` (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL, Gemma 3, InternVL, SmolVLM) adds to
:class:`~focus_tool.adapters.hf.TransformersAdapter`: construction (``preset_name`` as the default ``model_id``, then
the adapter's ``_configure``), the chat template, the batch encoding with each image's placeholder replaced by its
own text, the prefill, the interleaved turn and the multi-image answer calls. Token layouts, geometry and prompt
formats stay in each model's adapter, behind the hooks named here; the views of tiling models are in
:mod:`focus_tool.adapters.views`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from PIL import Image

from focus_tool.adapters.base import Prefill
from focus_tool.adapters.common import (
    load_chat_template,
    n_images,
    option_token_ids,
    reply_log_likelihoods,
    shared_prefix_log_likelihoods,
    target_positions,
)
from focus_tool.adapters.hf import TransformersAdapter
from focus_tool.errors import ModelLoadError
from focus_tool.grid import PatchGrid


class ChatTemplateAdapter(TransformersAdapter):
    """An adapter that loads an image processor and a tokenizer and builds its prompts itself (multi-image answer).

    In transformers 5.x the stock processors of these models need a video processor (torchvision), so the adapter
    renders the chat template and expands each image placeholder to the model's token count itself. The subclass
    gives the pixel inputs and token counts (:meth:`_pixel_inputs`), any extra token inputs (:meth:`_token_inputs`),
    the map tokens of a prefill (:meth:`_map_positions`) and the prompt without a chat template
    (:meth:`_fallback_prompt`); where the model needs it, the text of one image in the prompt
    (:meth:`_image_placeholder`, :meth:`_image_text`) and the interleaved layout (:meth:`_interleaved_text`,
    :meth:`_interleaved_prompt`, :meth:`_encode_interleaved`).
    """

    preset_name: ClassVar[str]  # the preset of the family (focus_tool.presets) and the default model_id
    image_count_source: ClassVar[str]  # in messages: "image tokens per prompt ... differ from {it} ..."

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        tokenizer: Any,
        *,
        chat_template: str | None = None,
        model_id: str | None = None,
    ) -> None:
        """Wrap a loaded model, its image processor and tokenizer; ``model_id`` defaults to :attr:`preset_name`.

        Then :meth:`_configure` reads and checks the model's own settings.

        Raises:
            ModelLoadError: if the checkpoint's settings do not fit the adapter (from :meth:`_configure`).
        """
        super().__init__(model, tokenizer, model_id=self.preset_name if model_id is None else model_id)
        self.image_processor = image_processor
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token: str = str(tokenizer.convert_ids_to_tokens(self.image_token_id))
        self._configure()

    def _configure(self) -> None:
        """Read the adapter's settings from ``self.model.config`` / ``self.image_processor`` / ``self.tokenizer``
        and check that they agree (raising :class:`~focus_tool.errors.ModelLoadError`); nothing here.
        """

    def _require_square_input(self, size: dict[str, Any], px: int, vision_px: int, *, verb: str) -> None:
        """Check that the image processor's ``size`` is the ``px`` square the vision tower takes (``vision_px``).

        Raises:
            ModelLoadError: "the image processor {verb} W x H px but the vision tower takes ``vision_px`` px".
        """
        if size.get("width") != px or px != vision_px:
            raise ModelLoadError(
                f"the image processor {verb} {size.get('width')} x {size.get('height')} px but the vision tower "
                f"takes {vision_px} px; use the checkpoint's own preprocessor_config.json"
            )

    def _require_tokens(self, *tokens: str) -> None:
        """Check that the tokenizer knows each of ``tokens`` as one token (not the unknown token).

        Raises:
            ModelLoadError: naming the first token it lacks.
        """
        unk = getattr(self.tokenizer, "unk_token_id", None)
        for token in tokens:
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if tid is None or tid == unk:
                raise ModelLoadError(f"the tokenizer has no {token!r} token; use the checkpoint's own tokenizer")

    @classmethod
    def _load_processors(cls, path: str) -> dict[str, Any]:
        """``AutoImageProcessor`` (the PIL backend when torchvision is absent), ``AutoTokenizer``, the chat template."""
        from transformers import AutoImageProcessor, AutoTokenizer

        image_processor = AutoImageProcessor.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        chat_template = load_chat_template(path, tokenizer)
        return {"image_processor": image_processor, "tokenizer": tokenizer, "chat_template": chat_template}

    # ------------------------------------------------------------------ prompts

    def chat_text(self, text: str, *, n_images: int = 1) -> str:
        """The templated prompt with ``n_images`` image placeholders before the text and the generation prompt."""
        content: list[dict[str, str]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": text})
        return self._render(content)

    def _text_prompt(self, text: str) -> str:
        """The templated prompt of ``text`` without an image."""
        return self.chat_text(text, n_images=0)

    def _render(self, content: list[dict[str, str]]) -> str:
        """One user turn of image / text items through the chat template, with the generation prompt.

        Without a chat template: :meth:`_fallback_prompt`.
        """
        if self.chat_template:
            return str(
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": content}],
                    chat_template=self.chat_template,
                    add_generation_prompt=True,
                    tokenize=False,
                )
            )
        return self._fallback_prompt(content)

    @abstractmethod
    def _fallback_prompt(self, content: list[dict[str, str]]) -> str:
        """One user turn of image / text items in the model's prompt format, for a checkpoint without a template."""

    def _interleaved_prompt(self, parts: Sequence[Image.Image | str]) -> tuple[list[Image.Image], str]:
        """The images of ``parts`` and the templated prompt of the turn (the layout of :meth:`generate_interleaved`):
        one content item per part, in order, each text line as :meth:`_interleaved_text` writes it.
        """
        images = [p for p in parts if isinstance(p, Image.Image)]
        content: list[dict[str, str]] = [
            {"type": "image"}
            if isinstance(p, Image.Image)
            else {"type": "text", "text": self._interleaved_text(parts, i)}
            for i, p in enumerate(parts)
        ]
        return images, self._render(content)

    def _interleaved_text(self, parts: Sequence[Image.Image | str], i: int) -> str:
        """The text item of the text line ``parts[i]`` in the interleaved turn (here: the line as is)."""
        return str(parts[i])

    # ------------------------------------------------------------------ encoding

    @abstractmethod
    def _pixel_inputs(self, images: Sequence[Image.Image]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """The model's pixel inputs of ``images`` (one per prompt, in the model dtype) and each image's token count."""

    def _token_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs derived from the token ids (B, N) besides ``input_ids`` / ``attention_mask``; none here."""
        return {}

    def _image_placeholder(self) -> str:
        """What the prompt writes in place of one image before encoding (here the image token itself)."""
        return self.image_token

    def _image_text(self, image: Image.Image, n_tokens: int) -> str:
        """The text that replaces one image's placeholder, holding its ``n_tokens`` image tokens (here the image
        token ``n_tokens`` times, as the stock processors expand it).
        """
        return self.image_token * n_tokens

    def _encode_prompts(self, prompts: Sequence[str], images: Sequence[Sequence[Image.Image]]) -> tuple[Any, list[str]]:
        """Left-padded batch of ``prompts``, the i-th holding ``len(images[i])`` placeholders
        (:meth:`_image_placeholder`), each replaced by its image's text (:meth:`_image_text`); pixel inputs of all
        images in order (:meth:`_pixel_inputs`), further inputs from :meth:`_token_inputs`. Returns the batch and the
        expanded prompts.

        Raises:
            ValueError: if a prompt holds another number of placeholders than its images.
            RuntimeError: if the tokenised prompts hold other image-token counts than :meth:`_pixel_inputs` gives.
        """
        flat = [im for ims in images for im in ims]
        pixels: dict[str, torch.Tensor]
        pixels, counts = self._pixel_inputs(flat) if flat else ({}, [])
        placeholder = self._image_placeholder()
        remaining = iter(zip(flat, counts, strict=True))
        expanded, want = [], []
        for prompt, ims in zip(prompts, images, strict=True):
            pieces = prompt.split(placeholder)
            if len(pieces) - 1 != len(ims):
                raise ValueError(f"prompt has {len(pieces) - 1} image placeholders but {len(ims)} images were given")
            text, total = pieces[0], 0
            for rest in pieces[1:]:
                image, n = next(remaining)
                text += self._image_text(image, n) + rest
                total += n
            expanded.append(text)
            want.append(total)
        enc = self.tokenizer(expanded, return_tensors="pt", padding=True)
        found = (enc["input_ids"] == self.image_token_id).sum(-1).tolist()
        if found != want:
            raise RuntimeError(f"image tokens per prompt {found} differ from {self.image_count_source} {want}")
        enc.update(self._token_inputs(enc["input_ids"]))
        enc.update(pixels)
        return enc.to(self.device), expanded

    def _encode(self, images: Sequence[Image.Image] | None, prompts: Sequence[str]) -> tuple[Any, list[str]]:
        """Tokenised batch (left padded) of one image per prompt (or none) with its inputs (:meth:`_encode_prompts`);
        returns it and the image-expanded prompts.
        """
        per_prompt: list[list[Image.Image]] = [[im] for im in images] if images else [[] for _ in prompts]
        return self._encode_prompts(prompts, per_prompt)

    def _encode_interleaved(self, images: Sequence[Image.Image], prompt: str) -> Any:
        """One prompt holding ``len(images)`` image placeholders, in order, encoded with the images' pixel inputs
        (here: each placeholder gets its own image's text, :meth:`_encode_prompts`).
        """
        return self._encode_prompts([prompt], [list(images)])[0]

    # ------------------------------------------------------------------ model calls (counted here)

    @abstractmethod
    def _map_positions(self, enc: Any, image_wh: tuple[int, int]) -> tuple[list[int], PatchGrid]:
        """The sequence positions of the map's tokens in the encoded prefill ``enc``, row-major, and their grid."""

    @torch.inference_mode()
    def prefill(self, image: Image.Image, text: str, target: str, *, keys_norope: bool = False) -> Prefill:
        """One forward pass over (image, text), keeping the cache; the map cells are those of :meth:`_map_positions`."""
        enc, expanded = self._encode([image], [self.chat_text(text)])
        input_ids = enc["input_ids"][0]
        values, keys, margin = self._prefill_forward(enc, image, keys_norope=keys_norope)
        vis, grid = self._map_positions(enc, image.size)
        tpos = target_positions(self.tokenizer, expanded[0], target, input_ids.cpu())
        return Prefill(values, input_ids.cpu(), vis, tpos, grid, margin, keys)

    @torch.inference_mode()
    def yes_no_margins(self, images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """l_Yes - l_No at the last position for each pair; one batched forward, counted as len(images)."""
        enc, _ = self._encode(images, [self.chat_text(t) for t in texts])
        return self._batch_margins(enc, len(images))

    @torch.inference_mode()
    def generate(self, image: Image.Image | None, text: str, *, max_new_tokens: int) -> str:
        """Greedy decoding; only the new tokens are decoded. Counts one pass."""
        prompt = self.chat_text(text, n_images=0 if image is None else 1)
        enc, _ = self._encode([image] if image is not None else None, [prompt])
        return self._greedy(enc, max_new_tokens)

    @torch.inference_mode()
    def generate_interleaved(self, parts: Sequence[Image.Image | str], *, max_new_tokens: int) -> str:
        """Greedy reply to one user turn of images and text lines; counts one pass.

        The turn is laid out by :meth:`_interleaved_prompt` and its images encoded by :meth:`_encode_interleaved`.
        """
        images, prompt = self._interleaved_prompt(parts)
        return self._greedy(self._encode_interleaved(images, prompt), max_new_tokens)

    @torch.inference_mode()
    def yes_no_margins_interleaved(self, prompts: Sequence[Sequence[Image.Image | str]]) -> torch.Tensor:
        """(n,) l_Yes - l_No at the last position of each interleaved turn; one forward per prompt, n passes."""
        yes, no = self.yes_no_ids()
        margins = []
        for parts in prompts:
            images, prompt = self._interleaved_prompt(parts)
            enc = self._encode_interleaved(images, prompt)
            last = self.model(**enc, use_cache=False, logits_to_keep=1).logits[0, -1].float()  # (V,)
            self.counter.add(1, int(enc["attention_mask"].sum()), images=n_images(enc))
            margins.append(last[yes] - last[no])
        return torch.stack(margins).cpu() if margins else torch.zeros(0)

    @torch.inference_mode()
    def option_log_likelihoods(
        self, images: Sequence[Image.Image], text: str, options: Sequence[str], *, shared_prefix: bool = False
    ) -> torch.Tensor:
        r"""(K,) mean log-probability of each option's tokens written as the assistant reply.

        SEAL / ZoomEye logit matching, the contract of :meth:`LlavaAdapter.option_log_likelihoods`: ``images`` then
        ``text`` in one user turn (:meth:`chat_text`), the option written right after the generation prompt
        (ChatML: no space after ``assistant\n``). By default each (prompt + option) runs as one full sequence (K
        passes); with ``shared_prefix`` the prompt is prefilled once and the options are scored as continuations of
        its cache (:func:`shared_prefix_log_likelihoods`; 1 pass). The images are encoded as in
        :meth:`generate_interleaved` (:meth:`_encode_interleaved`).
        """
        prompt = self.chat_text(text, n_images=len(images))
        return self._option_scores(list(images), prompt, options, shared_prefix=shared_prefix)

    @torch.inference_mode()
    def option_log_likelihoods_interleaved(
        self, parts: Sequence[Image.Image | str], options: Sequence[str], *, shared_prefix: bool = False
    ) -> torch.Tensor:
        """(K,) as :meth:`option_log_likelihoods` for a turn laid out as :meth:`generate_interleaved`."""
        images, prompt = self._interleaved_prompt(parts)
        return self._option_scores(images, prompt, options, shared_prefix=shared_prefix)

    def _option_scores(
        self, images: list[Image.Image], prompt: str, options: Sequence[str], *, shared_prefix: bool
    ) -> torch.Tensor:
        """(K,) option scores after ``prompt`` with ``images``: one prefill when ``shared_prefix`` and the options'
        tokens extend the prompt's, else :func:`reply_log_likelihoods` (K full sequences).
        """
        ids = option_token_ids(self.tokenizer, prompt, options, self.reply_separator) if shared_prefix else None
        if ids is not None:
            enc = self._encode_interleaved(images, prompt)
            return shared_prefix_log_likelihoods(
                self.model,
                self.counter,
                enc,
                ids,
                pad_id=self._pad_id(),
                images=n_images(enc),
                continuation_inputs=self._continuation_inputs(enc),
            )

        def encode(text: str) -> Any:
            return self._encode_interleaved(images, text)

        return reply_log_likelihoods(self.model, self.tokenizer, self.counter, encode, prompt, options)
