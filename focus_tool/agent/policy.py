"""What an agent-facing surface accepts: the :class:`AgentPolicy` and the path / URL / base64 checks under it.

Every image an agent sends is read here (exactly one of a path under the allowed roots, an allowed URL, or base64
bytes), its header checked, and decoded by the one decoder, :func:`focus_tool.inputs.decode_image_bytes`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from PIL import Image

from focus_tool.errors import InputRejected, quote_text
from focus_tool.fetch import DownloadPool, fetch_image_bytes
from focus_tool.inputs import PATH_QUOTE_CHARS, InputPolicy, check_image_header, decode_image_bytes
from focus_tool.inputs import SAFE_FORMATS as SAFE_FORMATS  # re-exported: the one format list

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ASCII_SPACE = re.compile(r"[ \t\r\n\f\v]+")

DEFAULT_CROPS: Final = 3
"""Crops a zoom returns when the caller names no number (every surface's default; at most ``max_crops``)."""


@dataclass(frozen=True, kw_only=True)
class AgentPolicy:
    """What an agent-facing surface accepts and returns. Roots are resolved (symlinks followed) at construction.

    Attributes:
        allowed_roots: directories image paths must resolve into; empty = every path is refused.
        max_base64_bytes: largest decoded base64 payload (the encoded text is checked before decoding).
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
        image: the image and text limits (pixels, file bytes, sides, question length): their one owner on this
            surface; the decoded image goes to the pipeline as an :class:`~focus_tool.inputs.AdmittedImage`, which
            it does not check again.
    """

    allowed_roots: tuple[Path, ...] = ()
    max_base64_bytes: int = 3_000_000
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
        for name in ("max_base64_bytes", "max_crops", "max_output_side_px"):
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

    @property
    def max_file_bytes(self) -> int:
        """Largest image file read from disk (:attr:`image`'s)."""
        return self.image.max_file_bytes

    @property
    def max_pixels(self) -> int:
        """Largest image (W * H) decoded, checked from the header (:attr:`image`'s)."""
        return self.image.max_pixels

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
    text = _ASCII_SPACE.sub("", text)  # base64 wrapped at 76 (MIME) or 64 (PEM) characters a line is accepted
    limit_chars = 4 * -(-policy.max_base64_bytes // 3)
    if len(text) > limit_chars:
        raise InputRejected(
            f"image_base64 is {len(text):,} characters; the limit is {limit_chars:,} "
            f"({policy.max_base64_bytes:,} bytes); downscale or recompress the image (JPEG), or pass image_path"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputRejected(
            "image_base64 is not valid base64 (only A-Z a-z 0-9 + / = and line breaks); send the raw file bytes "
            "base64-encoded"
        ) from None


def decode_image(data: bytes, policy: AgentPolicy, *, what: str = "the image") -> Image.Image:
    """:func:`focus_tool.inputs.decode_image_bytes` under the agent policy's caps (one decoder for every surface)."""
    return decode_image_bytes(data, policy.image, what=what)


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
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # a FIFO never blocks
            with os.fdopen(os.open(path, flags), "rb") as f:
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
    size = check_image_header(data, policy.image, what=what)
    return ImageSource(data, hashlib.sha256(data).hexdigest(), source, what, size)


def open_image(policy: AgentPolicy, *, image_path: str = "", image_base64: str = "") -> LoadedImage:
    """Read and decode exactly one of ``image_path`` / ``image_base64``; raises InputRejected."""
    src = read_source(policy, image_path=image_path, image_base64=image_base64)
    return LoadedImage(decode_image(src.data, policy, what=src.what), src.sha256, src.source)


# ---------------------------------------------------------------------------------------------------- results
