"""The engine layer behind the agent surfaces (LangChain tool, MCP server): input policy, session cache, one queue.

``FocusService.zoom`` is the one call both surfaces make. It

1. opens the image under an :class:`AgentPolicy`, once (absolute paths under allowed roots with symlinks resolved, a
   file-size cap, a base64 byte cap checked before decoding, a pixel cap and Pillow's decompression-bomb error
   checked from the header, a fixed list of decoders); an ``http(s)`` URL in ``image_path`` is refused unless the
   policy allows URLs, and then fetched by :mod:`focus_tool.fetch` (public addresses only, byte cap, timeout,
   image content type) and decoded with the same checks; the pipeline gets it as an
   :class:`~focus_tool.inputs.AdmittedImage` and does not check it again (the policy's limits are the only ones);
2. looks the request up in a small session cache keyed by the SHA-256 of the image bytes: an identical request
   (same question, target and region box) returns the stored result (*result reuse*: the forward passes it cost
   are reported as saved; switched off with ``reuse_results=False``, e.g. for load tests), and a request with
   ``region_id`` zooms inside a region of an earlier result on the same image;
3. runs :class:`~focus_tool.pipeline.FocusPipeline` one call at a time behind a bounded queue with a wait timeout,
   passing on the caller's per-step ``progress`` callback (called from the thread that runs the model).

Zooming inside a region crops the region (grown to the pipeline's minimum side if needed), runs the pipeline on
the crop and maps every box back with :meth:`PatchGrid.crop_to_image_xyxy`, so coordinates always stay in the
original image.

Region ids are per caller (:mod:`focus_tool.agent.cache`): the pipeline numbers a result's regions ``r1``, ``r2``,
...; every result handed out (computed or from the cache) gets a fresh token, so its ids read ``"<token>-r1"``, and
they are registered to the ``caller`` key the surface passes (MCP: the client's session; LangChain: the tool
instance; Python: any string, default ``""``). A region id this caller did not receive for this image (unknown,
forgotten, or another caller's) is refused in one line before the call queues. Sub-regions of a zoom get their own
token; ``session.parent_region_id`` names the region zoomed into.

The encoded image is reused across calls on the same image: the service switches on the adapter's image-prefix KV
cache (:mod:`focus_tool.adapters.prefix_cache`; LLaVA-1.5, the embedded model and LLaVA-OneVision), so a new
question or target on an image seen before runs the language model over the question's tokens only. The result
says so: ``session.reuse="encoded_image"`` and ``session.prefill_tokens_saved``; an identical repeated request is
``reuse="result"`` with its ``forward_passes_saved``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from focus_tool.agent.cache import Box, SessionCache
from focus_tool.agent.gate import TRIM_AFTER_PIXELS, InferenceGate, release_freed_memory
from focus_tool.agent.policy import DEFAULT_CROPS, AgentPolicy, LoadedImage, decode_image, read_source
from focus_tool.agent.render import crop_jpegs, shift_result, top_regions
from focus_tool.agent.wire import AgentResult, SessionInfo, ZoomOutcome
from focus_tool.errors import InputRejected
from focus_tool.fetch import DownloadPool
from focus_tool.inputs import AdmittedImage, check_text
from focus_tool.ops.boxes import expand_to_min_size
from focus_tool.pipeline import FocusPipeline
from focus_tool.result import FocusResult
from focus_tool.view import view_jpeg

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]
"""``progress(message, fraction)`` as the pipeline calls it at each step ("targets", "search <target>", "answer" or
"regions", "done"); ``fraction`` in [0, 1]. Same shape as :data:`focus_tool.pipeline.ProgressFn`."""


class Zoomable(Protocol):
    """What the service needs from an engine (:class:`~focus_tool.pipeline.FocusPipeline` satisfies it)."""

    def zoom(
        self,
        image: AdmittedImage,
        *,
        question: str | None = None,
        target: str | None = None,
        progress: ProgressFn | None = None,
    ) -> FocusResult:
        """Run FOCUS on one image the service has decoded and checked (not checked again), calling ``progress`` as
        each step starts.
        """
        ...


class FocusService:
    """The agent-facing engine: policy, session cache and queue around one FocusPipeline."""

    def __init__(
        self,
        pipeline: Zoomable,
        policy: AgentPolicy | None = None,
        *,
        cache: SessionCache | None = None,
        gate: InferenceGate | None = None,
        reuse_results: bool = True,
        image_cache_entries: int = 4,
        downloads: DownloadPool | None = None,
    ) -> None:
        """Wrap ``pipeline``; ``reuse_results=False`` runs the model on every call (region ids are still kept).

        ``image_cache_entries`` > 0 switches on the adapter's encoded-image cache with that many images (if the
        adapter supports it); 0 leaves the adapter as it is.
        """
        if image_cache_entries > 0 and isinstance(pipeline, FocusPipeline):
            pipeline.adapter.enable_image_cache(image_cache_entries)  # False (left as is) where unsupported
        self.pipeline = pipeline
        self.policy = policy or AgentPolicy()
        self.cache = cache or SessionCache()
        self.gate = gate or InferenceGate()
        self.reuse_results = reuse_results
        self.downloads = downloads or DownloadPool(self.policy.url_workers)  # URL inputs: threads of their own

    def zoom(
        self,
        *,
        image_path: str = "",
        image_base64: str = "",
        question: str = "",
        target: str = "",
        region_id: str = "",
        max_crops: int = DEFAULT_CROPS,
        return_images: bool = True,
        progress: ProgressFn | None = None,
        caller: str = "",
        view_max_side: int = 0,
    ) -> ZoomOutcome:
        """Open the image, reuse or compute the result (inside ``region_id`` if given), and cut the top crops.

        Args:
            image_path: absolute path under an allowed root (exclusive with ``image_base64``).
            image_base64: base64 image bytes.
            question: question to answer; its targets are extracted by the model unless ``target`` is set.
            target: object phrase to find (no answer without a question).
            region_id: id of a region returned to this ``caller`` for the same image, to zoom inside.
            max_crops: how many top regions to return as images (1 .. policy.max_crops).
            return_images: cut JPEG crops of the top regions.
            progress: called by the pipeline as each step starts (from the calling thread, while the model runs);
                not called on a cache hit.
            caller: who is calling (a key the surface supplies); the result's region ids are registered to it, and
                ``region_id`` must be one of its own.
            view_max_side: > 0: also cut the whole image as a JPEG at most this many pixels on its longer side
                (``ZoomOutcome.view_jpeg``, for a result view), while the image is decoded; 0: no view image.

        Raises:
            InputRejected: bad input, with the fix; ServiceBusy: queue full or wait timed out.
        """
        if not 1 <= max_crops <= self.policy.max_crops:
            raise InputRejected(f"max_crops must be between 1 and {self.policy.max_crops}, got {max_crops}")
        if not question.strip() and not target.strip():
            raise InputRejected("give a question about the image, or a target object to find")
        q = check_text(question, "question", self.policy.image) if question.strip() else ""
        t = check_text(target, "target", self.policy.image) if target.strip() else ""
        rid = region_id.strip()
        src = read_source(  # bytes + header only; a URL is fetched on the download pool, before any queue slot
            self.policy, image_path=image_path, image_base64=image_base64, downloads=self.downloads
        )
        if rid:
            self.cache.region_box(src.sha256, rid, caller)  # a region id not this caller's is refused before queueing
        t0 = time.perf_counter()
        with self.gate.slot():  # decode inside the slot: concurrent callers never hold several decoded images
            waited = time.perf_counter() - t0
            image = decode_image(src.data, self.policy, what=src.what)
            loaded = LoadedImage(image, src.sha256, src.source)
            parent_box = self._crop_box(self.cache.region_box(loaded.sha256, rid, caller), image.size) if rid else None
            key = (q, t, parent_box)
            cached = self.cache.lookup(loaded.sha256, key) if self.reuse_results else None
            base = cached if cached is not None else self._compute(loaded, q, t, parent_box, rid, progress, waited)
            issued, known = self.cache.issue(loaded.sha256, caller, base)
            fp = base.forward_passes
            info = SessionInfo(
                image_sha256=loaded.sha256,
                cache_hit=cached is not None,
                reuse="result" if cached is not None else "encoded_image" if base.image_cache_hits else "none",
                forward_passes_saved=fp.search + fp.answer + fp.extraction if cached is not None else 0,
                prefill_tokens_saved=0 if cached is not None else base.prefill_tokens_reused,
                parent_region_id=rid or None,
                parent_box=parent_box,
                known_region_ids=known,
            )
            result = AgentResult(**issued.model_dump(), session=info)
            regions = top_regions(result, max_crops)
            crops = crop_jpegs(image, regions, self.policy) if return_images else []
            view = view_jpeg(image, max_side=view_max_side) if view_max_side > 0 else None
            image_wh = image.size
            del image, loaded
            if image_wh[0] * image_wh[1] >= TRIM_AFTER_PIXELS:
                release_freed_memory()
        return ZoomOutcome(result=result, image_wh=image_wh, top_regions=regions, crops_jpeg=crops, view_jpeg=view)

    def _crop_box(self, box: Box, image_wh: tuple[int, int]) -> Box:
        """The crop the model sees for a region: its box grown about its centre to the policy's minimum side."""
        grown = expand_to_min_size(np.asarray(box, dtype=np.float64), self.policy.image.min_side_px, image_wh)[0]
        return (int(grown[0]), int(grown[1]), int(np.ceil(grown[2])), int(np.ceil(grown[3])))

    def _compute(
        self,
        loaded: LoadedImage,
        question: str,
        target: str,
        parent_box: Box | None,
        region_id: str,
        progress: ProgressFn | None,
        waited: float,
    ) -> FocusResult:
        """Run the pipeline (the caller holds the gate's slot) on the image or the crop ``parent_box``, and store the
        result in the session cache with the pipeline's own region ids (boxes in original-image pixels).
        """
        image = loaded.image.crop(parent_box) if parent_box is not None else loaded.image
        raw = self.pipeline.zoom(
            AdmittedImage(image), question=question or None, target=target or None, progress=progress
        )
        del image
        if parent_box is not None:
            raw = shift_result(raw, origin_xy=parent_box[:2], image_wh=loaded.image.size)
        raw = raw.model_copy(update={"timings_s": {**raw.timings_s, "queue": round(waited, 4)}})
        self.cache.store(loaded.sha256, (question, target, parent_box), raw)
        logger.info(
            "zoom on %s image %s (region %s): %d regions",
            loaded.source,
            loaded.sha256[:12],
            region_id or "-",
            len(raw.regions),
        )
        return raw
