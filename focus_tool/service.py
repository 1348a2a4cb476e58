"""The engine layer behind the agent surfaces (LangChain tool, MCP server): input policy, session cache, one queue.

``FocusService.zoom`` is the one call both surfaces make. It

1. opens the image under an :class:`AgentPolicy` (absolute paths under allowed roots with symlinks resolved, a
   file-size cap, a base64 byte cap checked before decoding, a pixel cap and Pillow's decompression-bomb error
   checked from the header, a fixed list of decoders); an ``http(s)`` URL in ``image_path`` is refused unless the
   policy allows URLs, and then fetched by :mod:`focus_tool.fetch` (public addresses only, byte cap, timeout,
   image content type) and decoded with the same checks;
2. looks the request up in a small session cache keyed by the SHA-256 of the image bytes: an identical request
   returns the stored result (*result reuse*: the forward passes it cost are reported as saved; switched off with
   ``reuse_results=False``, e.g. for load tests), and a request with ``region_id`` zooms inside a region of an
   earlier result on the same image;
3. runs :class:`~focus_tool.pipeline.FocusPipeline` one call at a time behind a bounded queue with a wait timeout,
   passing on the caller's per-step ``progress`` callback (called from the thread that runs the model).

Zooming inside a region crops the region (grown to the pipeline's minimum side if needed), runs the pipeline on
the crop and maps every box back with :meth:`PatchGrid.crop_to_image_xyxy`, so coordinates always stay in the
original image. Sub-regions get hierarchical ids (``r1.2`` = region 2 found inside ``r1``).

The encoded image is reused across calls on the same image: the service switches on the adapter's image-prefix KV
cache (:mod:`focus_tool.adapters.prefix_cache`; LLaVA-1.5, the embedded model and LLaVA-OneVision), so a new
question or target on an image seen before runs the language model over the question's tokens only. The result
says so: ``session.reuse="encoded_image"`` and ``session.prefill_tokens_saved``; an identical repeated request is
``reuse="result"`` with its ``forward_passes_saved``.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import functools
import hashlib
import io
import json
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from focus_tool.errors import ConfigError, FocusError, InputRejected, quote_text
from focus_tool.fetch import DownloadPool, fetch_image_bytes
from focus_tool.grid import PatchGrid
from focus_tool.inputs import PATH_QUOTE_CHARS, InputPolicy, check_image_header, check_text, decode_image_bytes
from focus_tool.inputs import SAFE_FORMATS as SAFE_FORMATS  # re-exported: the one format list
from focus_tool.ops.boxes import expand_to_min_size
from focus_tool.result import FocusResult, Region, RelevanceMapOut

logger = logging.getLogger(__name__)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

ProgressFn = Callable[[str, float], None]
"""``progress(message, fraction)`` as the pipeline calls it at each step ("targets", "search <target>", "answer" or
"regions", "done"); ``fraction`` in [0, 1]. Same shape as :data:`focus_tool.pipeline.ProgressFn`."""


class ServiceBusy(FocusError):
    """The inference queue is full, or the wait for the model timed out; retry later."""


@dataclass(frozen=True, kw_only=True)
class AgentPolicy:
    """What an agent-facing surface accepts and returns. Roots are resolved (symlinks followed) at construction.

    Attributes:
        allowed_roots: directories image paths must resolve into; empty = every path is refused.
        max_file_bytes: largest image file read from disk.
        max_base64_bytes: largest decoded base64 payload (the encoded text is checked before decoding).
        max_pixels: largest image (W * H) decoded; checked from the header, before pixel data is read.
        max_crops: upper bound on the crops a caller may ask for.
        max_output_side_px: long side of each returned crop image.
        max_output_bytes: total JPEG bytes of the returned crop images; further crops are dropped.
        jpeg_quality: quality of the returned crop images.
        allow_urls: fetch ``http(s)://`` URLs given as ``image_path`` (off: every URL is refused). The download
            is capped at ``max_base64_bytes``.
        url_timeout_s: total time budget of one download, redirects included.
        url_max_redirects: redirect hops followed (each one re-validated).
        url_allow_private: also fetch from loopback / private / link-local addresses (off: public only; turn on
            only for an intranet or a loopback test, it opens the server to SSRF).
        url_workers: downloads at once on the service's :class:`~focus_tool.fetch.DownloadPool` (threads of
            their own, never the model's); one more is refused as busy.
        image: the engine's own checks (minimum side, question length).
    """

    allowed_roots: tuple[Path, ...] = ()
    max_file_bytes: int = 20_000_000
    max_base64_bytes: int = 3_000_000
    max_pixels: int = 40_000_000
    max_crops: int = 8
    max_output_side_px: int = 768
    max_output_bytes: int = 800_000
    jpeg_quality: int = 85
    allow_urls: bool = False
    url_timeout_s: float = 10.0
    url_max_redirects: int = 3
    url_allow_private: bool = False
    url_workers: int = 4
    image: InputPolicy = field(default_factory=InputPolicy)
    _given_roots: tuple[Path, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        given = tuple(Path(os.path.abspath(os.path.expanduser(r))) for r in self.allowed_roots)
        object.__setattr__(self, "_given_roots", given)
        object.__setattr__(self, "allowed_roots", tuple(r.resolve() for r in given))
        for name in ("max_file_bytes", "max_base64_bytes", "max_pixels", "max_crops", "max_output_side_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in 1..95, got {self.jpeg_quality}")
        if not self.url_timeout_s > 0:
            raise ValueError(f"url_timeout_s must be > 0, got {self.url_timeout_s}")
        if self.url_workers < 1:
            raise ValueError(f"url_workers must be >= 1, got {self.url_workers}")
        if self.url_max_redirects < 0:
            raise ValueError(f"url_max_redirects must be >= 0, got {self.url_max_redirects}")

    @property
    def given_roots(self) -> tuple[Path, ...]:
        """The roots as given (absolute, ``..`` collapsed, symlinks not followed) for the textual root check."""
        return self._given_roots

    def input_policy(self) -> InputPolicy:
        """The decoder policy: :attr:`image` with this policy's pixel and file-size caps."""
        return replace(self.image, max_pixels=self.max_pixels, max_file_bytes=self.max_file_bytes)

    def roots_text(self) -> str:
        """The allowed roots for error messages."""
        return ", ".join(str(r) for r in self.allowed_roots) or "(none configured)"


# ---------------------------------------------------------------------------------------------------- input checks


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def check_path(raw: str, policy: AgentPolicy) -> Path:
    """Validate a caller-given image path: absolute, under an allowed root after resolving symlinks, a regular file.

    The root check comes first and never touches the file system outside the roots: the normalised absolute path
    (``..`` collapsed as text) must lie under an allowed root, then the path resolved as far as it exists (symlinks
    followed) must still lie under one; only then is the file looked at. So every path outside (existing or not,
    reached by ``..`` or by a symlink) gets the same refusal, and nothing can be learnt about files outside.

    Raises:
        InputRejected: with the rule that failed and how to fix it (never file contents).
    """
    allowed = policy.roots_text()
    shown = quote_text(raw, PATH_QUOTE_CHARS)
    outside = InputRejected(
        f"image_path {shown} is outside the allowed folders ({allowed}); copy the image into one of them"
    )
    if "\x00" in raw:
        raise InputRejected("image_path contains a NUL byte; pass a plain absolute path")
    if _URL.match(raw):
        raise InputRejected(
            "URL inputs are disabled on this server; download the image and pass its absolute path under one of: "
            f"{allowed}, or send the bytes as image_base64"
        )
    if not os.path.isabs(raw):
        raise InputRejected(f"image_path must be an absolute path under one of: {allowed}; got {shown}")
    if not policy.allowed_roots:
        raise InputRejected("no allowed image folders are configured on this server; send the image as image_base64")
    lexical = Path(os.path.normpath(raw))
    if not _under(lexical, (*policy.allowed_roots, *policy.given_roots)):
        raise outside
    try:
        path = lexical.resolve(strict=False)  # symlinks followed as far as the path exists
    except (OSError, RuntimeError):
        raise InputRejected(f"cannot resolve {shown}; pass a plain absolute path under one of: {allowed}") from None
    if not _under(path, policy.allowed_roots):
        raise outside
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise InputRejected(f"no such file: {shown}; check the path (allowed folders: {allowed})") from None
    except OSError as e:
        raise InputRejected(f"cannot read {shown} ({e.strerror or type(e).__name__}); check the path") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputRejected(f"{shown} is not a regular file; pass the path of an image file")
    if info.st_size > policy.max_file_bytes:
        raise InputRejected(f"{shown} is {info.st_size:,} bytes; the limit is {policy.max_file_bytes:,}; downscale it")
    return path


def decode_base64(text: str, policy: AgentPolicy) -> bytes:
    """Decode a base64 image payload, checking the encoded length against the cap before decoding."""
    text = text.strip()
    if text.startswith("data:"):  # tolerate a data URL: data:image/png;base64,....
        _, _, text = text.partition(",")
    limit_chars = 4 * -(-policy.max_base64_bytes // 3)
    if len(text) > limit_chars:
        raise InputRejected(
            f"image_base64 is {len(text):,} characters; the limit is {limit_chars:,} "
            f"({policy.max_base64_bytes:,} bytes); downscale or recompress the image (JPEG), or pass image_path"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputRejected("image_base64 is not valid base64; send the raw file bytes base64-encoded") from None


def decode_image(data: bytes, policy: AgentPolicy, *, what: str = "the image") -> Image.Image:
    """:func:`focus_tool.inputs.decode_image_bytes` under the agent policy's caps (one decoder for every surface)."""
    return decode_image_bytes(data, policy.input_policy(), what=what)


@dataclass(frozen=True)
class ImageSource:
    """The checked bytes of a caller's image (header parsed, no pixel decoded) and their SHA-256 (the cache key)."""

    data: bytes
    sha256: str
    source: str  # "path", "url" or "base64", for logs
    what: str  # how messages name it
    size: tuple[int, int]  # (W, H) from the header (before EXIF orientation)


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image and the hash of the bytes it came from (the session-cache key)."""

    image: Image.Image
    sha256: str
    source: str  # "path", "url" or "base64", for logs


def read_source(
    policy: AgentPolicy, *, image_path: str = "", image_base64: str = "", downloads: DownloadPool | None = None
) -> ImageSource:
    """Read exactly one of ``image_path`` (a path, or a URL if allowed) / ``image_base64`` and check its header.

    Cheap: bytes are read and the header parsed (format, size caps, PNG chunk bombs), no pixel is decoded. A URL
    is downloaded on ``downloads`` (busy when full) if given, else on the calling thread.
    """
    if bool(image_path) == bool(image_base64):
        raise InputRejected(
            "give exactly one of image_path (absolute path under an allowed folder) or image_base64 (encoded bytes)"
        )
    if image_path and policy.allow_urls and _URL.match(image_path):
        fetch = downloads.fetch if downloads is not None else fetch_image_bytes
        data = fetch(
            image_path,
            max_bytes=policy.max_base64_bytes,
            timeout_s=policy.url_timeout_s,
            max_redirects=policy.url_max_redirects,
            allow_private=policy.url_allow_private,
        )
        source, what = "url", "the image at the URL"
    elif image_path:
        path = check_path(image_path, policy)
        what = quote_text(image_path, PATH_QUOTE_CHARS)
        try:  # O_NOFOLLOW: a file swapped for a symlink after the check is not followed out of the root
            with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise InputRejected(f"{what} is not a regular file; pass the path of an image file")
                data = f.read(policy.max_file_bytes + 1)
        except OSError as e:
            raise InputRejected(f"cannot read {what} ({e.strerror or type(e).__name__})") from None
        if len(data) > policy.max_file_bytes:  # the file grew after the stat
            raise InputRejected(f"{what} is larger than {policy.max_file_bytes:,} bytes; downscale it")
        source = "path"
    else:
        data = decode_base64(image_base64, policy)
        source, what = "base64", "image_base64"
    size = check_image_header(data, policy.input_policy(), what=what)
    return ImageSource(data, hashlib.sha256(data).hexdigest(), source, what, size)


def open_image(policy: AgentPolicy, *, image_path: str = "", image_base64: str = "") -> LoadedImage:
    """Read and decode exactly one of ``image_path`` / ``image_base64``; raises InputRejected."""
    src = read_source(policy, image_path=image_path, image_base64=image_base64)
    return LoadedImage(decode_image(src.data, policy, what=src.what), src.sha256, src.source)


# ---------------------------------------------------------------------------------------------------- results


class SessionInfo(BaseModel):
    """How a result relates to earlier calls on the same image (same bytes)."""

    image_sha256: str = Field(description="SHA-256 of the image bytes; the session-cache key")
    cache_hit: bool = Field(description="an identical earlier request's result was returned without running the model")
    reuse: Literal["none", "result", "encoded_image"] = Field(
        description="'result': the whole earlier result was reused (no model run); 'encoded_image': the model ran "
        "but reused the image's KV prefix from an earlier call; 'none': everything was computed"
    )
    forward_passes_saved: int = Field(ge=0, description="model passes not run thanks to the result cache")
    prefill_tokens_saved: int = Field(
        default=0, ge=0, description="prompt tokens (the image's) not recomputed thanks to the encoded-image cache"
    )
    parent_region_id: str | None = Field(default=None, description="region zoomed into, if any")
    parent_box: tuple[int, int, int, int] | None = Field(
        default=None, description="[x0, y0, x1, y1] of the crop the model saw, original-image pixels"
    )
    known_region_ids: list[str] = Field(
        default_factory=list, description="region ids a follow-up call on this image may pass as region_id"
    )


class AgentResult(FocusResult):
    """A :class:`FocusResult` plus its session information; boxes are original-image pixels."""

    session: SessionInfo


@dataclass(frozen=True)
class ZoomOutcome:
    """What a surface formats: the result, the image size and the JPEG crops of the top regions.

    The decoded image is not kept: it lives only inside the service's queue slot (one decoded image at a time).
    """

    result: AgentResult
    image_wh: tuple[int, int]
    top_regions: list[Region]
    crops_jpeg: list[bytes]


def top_regions(result: FocusResult, n: int) -> list[Region]:
    """The ``n`` best regions: those used for the answer first, then by confidence, then by rank."""
    ordered = sorted(
        result.regions,
        key=lambda r: (not r.selected, -(r.confidence if r.confidence is not None else -1.0), r.rank, r.id),
    )
    return ordered[:n]


def crop_jpegs(image: Image.Image, regions: Sequence[Region], policy: AgentPolicy) -> list[bytes]:
    """One JPEG per region, long side at most ``max_output_side_px``, total bytes at most ``max_output_bytes``."""
    out: list[bytes] = []
    total = 0
    for region in regions:
        piece = image.crop(region.box)
        scale = policy.max_output_side_px / max(piece.size)
        if scale < 1.0:
            size = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
            piece = piece.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        piece.save(buf, format="JPEG", quality=policy.jpeg_quality)
        data = buf.getvalue()
        if total + len(data) > policy.max_output_bytes:
            logger.info("dropping crops after %d: output byte cap %d reached", len(out), policy.max_output_bytes)
            break
        out.append(data)
        total += len(data)
    return out


def shift_result(
    result: FocusResult, *, origin_xy: tuple[int, int], image_wh: tuple[int, int], prefix: str
) -> FocusResult:
    """Map a result computed on a crop back to the original image (boxes, maps) and prefix its region ids.

    Args:
        result: the pipeline's result on the crop (boxes in crop pixels).
        origin_xy: the crop's top-left corner in original-image pixels.
        image_wh: (W, H) of the original image.
        prefix: the parent region id; sub-regions become ``{prefix}.{n}``.
    """

    def to_image(box: Sequence[float]) -> tuple[int, int, int, int]:
        xyxy = PatchGrid.crop_to_image_xyxy(np.asarray(box, dtype=np.float64), origin_xy)[0]  # (4,)
        return (int(xyxy[0]), int(xyxy[1]), int(xyxy[2]), int(xyxy[3]))

    regions = [
        r.model_copy(update={"id": f"{prefix}.{r.id.lstrip('r')}", "box": to_image(r.box)}) for r in result.regions
    ]
    maps = [
        RelevanceMapOut(
            target=m.target,
            rows=m.rows,
            cols=m.cols,
            values=m.values,
            view_xyxy=tuple(float(v) for v in PatchGrid.crop_to_image_xyxy(np.asarray(m.view_xyxy), origin_xy)[0]),  # type: ignore[arg-type]
        )
        for m in result.relevance_maps
    ]
    return result.model_copy(
        update={
            "image_wh": image_wh,
            "regions": regions,
            "relevance_maps": maps,
            "answer_boxes": [to_image(b) for b in result.answer_boxes],
        }
    )


# ---------------------------------------------------------------------------------------------------- cache + gate


@dataclass
class _ImageEntry:
    """What the session remembers about one image."""

    regions: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # id -> original-image box
    results: OrderedDict[tuple[str, str, str], FocusResult] = field(default_factory=OrderedDict)


class SessionCache:
    """Results of recent calls per image content hash (LRU over images, and over requests per image). Thread-safe."""

    def __init__(self, max_images: int = 16, max_results_per_image: int = 16) -> None:
        if max_images < 1 or max_results_per_image < 1:
            raise ValueError(f"cache sizes must be >= 1, got {max_images}, {max_results_per_image}")
        self._max_images = max_images
        self._max_results = max_results_per_image
        self._images: OrderedDict[str, _ImageEntry] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, sha: str, key: tuple[str, str, str]) -> FocusResult | None:
        """The stored result of an identical request, if any."""
        with self._lock:
            entry = self._images.get(sha)
            if entry is None or key not in entry.results:
                return None
            self._images.move_to_end(sha)
            entry.results.move_to_end(key)
            return entry.results[key]

    def region_box(self, sha: str, region_id: str) -> tuple[int, int, int, int]:
        """The original-image box of a region returned earlier for this image; raises InputRejected if unknown."""
        with self._lock:
            entry = self._images.get(sha)
            if entry is not None and region_id in entry.regions:
                return entry.regions[region_id]
            known = ", ".join(list(entry.regions)[:20]) if entry else ""
        if not known:
            raise InputRejected(
                f"region_id {quote_text(region_id)} is unknown: no earlier result for this image is remembered; "
                "call without region_id first, then pass one of the returned region ids"
            )
        raise InputRejected(
            f"region_id {quote_text(region_id)} is unknown for this image; pass one of the known ids: {known}"
        )

    def store(self, sha: str, key: tuple[str, str, str], result: FocusResult) -> list[str]:
        """Remember a result and its regions; returns the region ids now known for this image."""
        with self._lock:
            entry = self._images.setdefault(sha, _ImageEntry())
            self._images.move_to_end(sha)
            entry.results[key] = result
            entry.results.move_to_end(key)
            while len(entry.results) > self._max_results:
                entry.results.popitem(last=False)
            for r in result.regions:
                entry.regions[r.id] = r.box
            while len(self._images) > self._max_images:
                self._images.popitem(last=False)
            return list(entry.regions)

    def known_ids(self, sha: str) -> list[str]:
        """Region ids remembered for an image."""
        with self._lock:
            entry = self._images.get(sha)
            return list(entry.regions) if entry else []

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._images.clear()


class InferenceGate:
    """One inference at a time; at most ``max_waiting`` callers queue, each for at most ``timeout_s`` seconds."""

    def __init__(self, *, max_waiting: int = 16, timeout_s: float = 120.0) -> None:
        if max_waiting < 0:
            raise ConfigError(f"the queue length must be >= 0, got {max_waiting}; pass 0 to refuse while busy")
        if not 0 < timeout_s <= threading.TIMEOUT_MAX:  # also refuses nan and inf (a lock cannot wait that long)
            raise ConfigError(f"the queue timeout must be a finite number of seconds > 0, got {timeout_s}; e.g. 120")
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._run = threading.Lock()
        self._count = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Callers currently queued (not counting the one running)."""
        return self._waiting

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold the model for one inference; raises ServiceBusy when the queue is full or the wait times out."""
        if self._run.acquire(blocking=False):
            try:
                yield
            finally:
                self._run.release()
            return
        with self._count:
            if self._waiting >= self.max_waiting:
                raise ServiceBusy(
                    f"the model is busy and {self._waiting} request(s) are already queued; retry in a few seconds"
                )
            self._waiting += 1
        try:
            acquired = self._run.acquire(timeout=self.timeout_s)
        finally:
            with self._count:
                self._waiting -= 1
        if not acquired:
            raise ServiceBusy(f"waited {self.timeout_s:.0f} s for the model without getting a turn; retry later")
        try:
            yield
        finally:
            self._run.release()


# ---------------------------------------------------------------------------------------------------- the service

_TRIM_AFTER_PIXELS = 4_000_000  # after an image this large (48 MB+ in Pillow) freed memory is handed back


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
        return trim
    except (OSError, AttributeError):
        return None


def _release_freed_memory() -> None:
    """Return freed heap memory to the OS. glibc keeps what a thread freed in that thread's malloc arena, so each
    worker thread that once decoded a 40 MP image would keep ~200 MB (4 threads: +730 MB instead of +220 MB)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class Zoomable(Protocol):
    """What the service needs from an engine (:class:`~focus_tool.pipeline.FocusPipeline` satisfies it)."""

    def zoom(
        self,
        image: Image.Image,
        *,
        question: str | None = None,
        target: str | None = None,
        progress: ProgressFn | None = None,
    ) -> FocusResult:
        """Run FOCUS on one image, calling ``progress`` as each step starts."""
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
        adapter = getattr(pipeline, "adapter", None)
        if image_cache_entries > 0 and adapter is not None and hasattr(adapter, "enable_image_cache"):
            adapter.enable_image_cache(image_cache_entries)
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
        max_crops: int = 3,
        return_images: bool = True,
        progress: ProgressFn | None = None,
    ) -> ZoomOutcome:
        """Open the image, reuse or compute the result (inside ``region_id`` if given), and cut the top crops.

        Args:
            image_path: absolute path under an allowed root (exclusive with ``image_base64``).
            image_base64: base64 image bytes.
            question: question to answer; its targets are extracted by the model unless ``target`` is set.
            target: object phrase to find (no answer without a question).
            region_id: id of a region of an earlier result on the same image to zoom inside.
            max_crops: how many top regions to return as images (1 .. policy.max_crops).
            return_images: cut JPEG crops of the top regions.
            progress: called by the pipeline as each step starts (from the calling thread, while the model runs);
                not called on a cache hit.

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
            self.cache.region_box(src.sha256, rid)  # an unknown region id is refused before queueing
        key = (q, t, rid)
        t0 = time.perf_counter()
        with self.gate.slot():  # decode inside the slot: concurrent callers never hold several decoded images
            waited = time.perf_counter() - t0
            image = decode_image(src.data, self.policy, what=src.what)
            loaded = LoadedImage(image, src.sha256, src.source)
            cached = self.cache.lookup(loaded.sha256, key) if self.reuse_results else None
            if cached is not None:
                fp = cached.forward_passes
                info = SessionInfo(
                    image_sha256=loaded.sha256,
                    cache_hit=True,
                    reuse="result",
                    forward_passes_saved=fp.search + fp.answer + fp.aux,
                    parent_region_id=rid or None,
                    parent_box=self.cache.region_box(loaded.sha256, rid) if rid else None,
                    known_region_ids=self.cache.known_ids(loaded.sha256),
                )
                result = AgentResult(**cached.model_dump(), session=info)
            else:
                result = self._compute(loaded, q, t, rid, progress, waited)
            regions = top_regions(result, max_crops)
            crops = crop_jpegs(image, regions, self.policy) if return_images else []
            image_wh = image.size
            del image, loaded
            if image_wh[0] * image_wh[1] >= _TRIM_AFTER_PIXELS:
                _release_freed_memory()
        return ZoomOutcome(result=result, image_wh=image_wh, top_regions=regions, crops_jpeg=crops)

    def _compute(
        self,
        loaded: LoadedImage,
        question: str,
        target: str,
        region_id: str,
        progress: ProgressFn | None,
        waited: float,
    ) -> AgentResult:
        """Run the pipeline (the caller holds the gate's slot) and store the result in the session cache."""
        image, parent_box = loaded.image, None
        if region_id:
            box = self.cache.region_box(loaded.sha256, region_id)
            grown = expand_to_min_size(np.asarray(box, dtype=np.float64), self.policy.image.min_side_px, image.size)[0]
            parent_box = (int(grown[0]), int(grown[1]), int(np.ceil(grown[2])), int(np.ceil(grown[3])))
            image = image.crop(parent_box)
        raw = self.pipeline.zoom(image, question=question or None, target=target or None, progress=progress)
        del image
        if parent_box is not None:
            raw = shift_result(raw, origin_xy=parent_box[:2], image_wh=loaded.image.size, prefix=region_id)
        raw = raw.model_copy(update={"timings_s": {**raw.timings_s, "queue": round(waited, 4)}})
        known = self.cache.store(loaded.sha256, (question, target, region_id), raw)
        info = SessionInfo(
            image_sha256=loaded.sha256,
            cache_hit=False,
            reuse="encoded_image" if raw.image_cache_hits else "none",
            forward_passes_saved=0,
            prefill_tokens_saved=raw.prefill_tokens_reused,
            parent_region_id=region_id or None,
            parent_box=parent_box,
            known_region_ids=known,
        )
        logger.info(
            "zoom on %s image %s (region %s): %d regions",
            loaded.source,
            loaded.sha256[:12],
            region_id or "-",
            len(raw.regions),
        )
        return AgentResult(**raw.model_dump(), session=info)


def summary_json(outcome: ZoomOutcome) -> str:
    """Compact JSON an LLM can read without the images: answer, top regions, coordinates note, cache figures."""
    r = outcome.result
    fp = r.forward_passes
    summary = {
        "question": r.question,
        "answer": r.answer,
        "targets": r.targets,
        "image_size": list(r.image_wh),
        "regions": [
            {
                "id": g.id,
                "box": list(g.box),
                "confidence": None if g.confidence is None else round(g.confidence, 4),
                "target": g.target,
                "used_for_answer": g.selected,
            }
            for g in outcome.top_regions
        ],
        "regions_total": len(r.regions),
        "answer_view": r.answer_view,
        "status": None if r.status is None else r.status.question,
        "targets_status": []
        if r.status is None
        else [
            {
                "target": t.target,
                "state": t.state,
                "confidence": None if t.confidence is None else round(t.confidence, 4),
            }
            for t in r.status.targets
        ],
        "warnings": [] if r.status is None else [f"{w.code}: {w.message}" for w in r.status.warnings],
        "forward_passes": {"search": fp.search, "answer": fp.answer, "extraction": fp.aux},
        "seconds": round(sum(v for k, v in r.timings_s.items() if k != "queue"), 3),
        "session": {
            "cache_hit": r.session.cache_hit,
            "reuse": r.session.reuse,
            "forward_passes_saved": r.session.forward_passes_saved,
            "prefill_tokens_saved": r.session.prefill_tokens_saved,
            "zoomed_into": r.session.parent_region_id,
        },
        "note": "boxes are [x0, y0, x1, y1] in original-image pixels; confidence is P(object present) in 0-1; "
        "status: answered_on_region, answered_on_whole_image (nothing found), refused (see warnings) or not_asked; "
        "a target state of not_found means no region is selected; ambiguous means several regions match; "
        "to zoom inside a region, call again with the same image and region_id set to its id",
    }
    return json.dumps(summary, separators=(",", ":"))
