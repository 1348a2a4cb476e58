"""Server settings: one frozen dataclass, filled from command-line flags and ``FOCUS_*`` environment variables.

Every setting is checked here, at start (ranges from one table, the device by
:func:`focus_tool.devices.resolve_device` in :func:`mcp_server.__main__.run`), and :meth:`ServerSettings.policy`
builds the one input policy from the fields it shares with :class:`~focus_tool.agent.AgentPolicy` and
:class:`~focus_tool.inputs.InputPolicy`. Importing this module imports neither ``mcp`` nor torch, so ``focus --help``
and ``focus serve --help`` stay fast.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from focus_tool.agent import gate
from focus_tool.agent.policy import AgentPolicy
from focus_tool.devices import DEFAULT_DEVICE, DEVICE_CHOICES
from focus_tool.errors import ConfigError, quote_text
from focus_tool.inputs import PATH_QUOTE_CHARS, InputPolicy

Transport = Literal["stdio", "streamable-http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
_LOOPBACK_NAMES = {"localhost"}


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything the server needs; immutable once built.

    Attributes:
        allowed_roots: folders image paths must resolve into (none: paths are refused, base64 still works).
        model: checkpoint folder or hub id; None = the embedded model.
        device: auto (cuda if PyTorch sees a GPU, else mps, else cpu; :func:`focus_tool.devices.resolve_device`),
            cpu, cuda or mps.
        transport: stdio (desktop hosts) or streamable-http.
        host, port, path: where streamable HTTP listens (loopback only: there is no authentication); only Host and
            Origin headers naming the bound address (or ``localhost``) are served (:meth:`http_allow_lists`).
        structured_output: declare an output schema and return structured content (off: text + images only).
        return_images: add one JPEG per top crop to every result.
        reuse_results: answer an identical repeated request from the session cache (off: the model runs every time;
            region ids are remembered either way).
        max_file_bytes, max_base64_bytes, max_pixels, max_crops, max_output_side_px, max_output_bytes: input and
            output limits (see :class:`focus_tool.agent.AgentPolicy` and :class:`focus_tool.inputs.InputPolicy`;
            :meth:`policy` passes on every field whose name one of them has).
        allow_urls: fetch ``http(s)://`` URLs given as ``image_path`` (off: refused). Downloads are capped at
            ``max_base64_bytes``.
        url_timeout_s: total time budget of one download.
        url_allow_private: also fetch from loopback / private addresses (SSRF risk; intranet or tests only).
        url_workers: downloads running at once, on their own threads (never the model's); one more is refused
            as busy.
        max_waiting: calls that may queue behind the running one; more are refused as busy.
        timeout_s: longest wait in the queue before a call is refused as busy.
        log_level: level of the stderr log.
    """

    allowed_roots: tuple[Path, ...] = ()
    model: str | None = None
    device: str = DEFAULT_DEVICE
    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/mcp"
    structured_output: bool = True
    return_images: bool = True
    reuse_results: bool = True
    max_file_bytes: int = InputPolicy.max_file_bytes
    max_base64_bytes: int = AgentPolicy.max_base64_bytes
    max_pixels: int = InputPolicy.max_pixels
    max_crops: int = AgentPolicy.max_crops
    max_output_side_px: int = AgentPolicy.max_output_side_px
    max_output_bytes: int = AgentPolicy.max_output_bytes
    allow_urls: bool = AgentPolicy.allow_urls
    url_timeout_s: float = AgentPolicy.url_timeout_s
    url_allow_private: bool = AgentPolicy.url_allow_private
    url_workers: int = AgentPolicy.url_workers
    max_waiting: int = gate.MAX_WAITING
    timeout_s: float = gate.TIMEOUT_S
    log_level: LogLevel = "INFO"

    def __post_init__(self) -> None:
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(
                f"--device (env FOCUS_DEVICE) must be one of {', '.join(DEVICE_CHOICES)}, got {_shown(self.device)}"
            )
        if self.transport not in ("stdio", "streamable-http"):
            raise ConfigError(f"--transport must be stdio or streamable-http, got {quote_text(self.transport)}")
        if not isinstance(self.host, str) or not _is_loopback(self.host):
            raise ConfigError(
                f"refusing to listen on {quote_text(self.host)}: the server has no authentication; bind 127.0.0.1 "
                "(or ::1, or another loopback address) and put an authenticating proxy in front for remote use"
            )
        for name, (flag, lo, hi) in _INT_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{flag} must be an integer between {lo:,} and {hi:,}, got {_shown(value)}")
        for name, (flag, longest) in _SECONDS_RANGES.items():
            seconds = getattr(self, name)
            ok = isinstance(seconds, int | float) and not isinstance(seconds, bool) and math.isfinite(seconds)
            if not (ok and 0 < seconds <= longest):
                raise ConfigError(
                    f"{flag} must be a number of seconds above 0 and at most {longest:g}, got {_shown(seconds)}"
                )
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {quote_text(self.log_level)}")

    @property
    def bind_host(self) -> str:
        """The host to bind, normalised: ``localhost`` in lower case, an IP address in its compressed form
        (``0:0:0:0:0:0:0:1`` and ``[::1]`` -> ``::1``).
        """
        return _normalise_host(self.host)

    def http_allow_lists(self) -> tuple[list[str], list[str]]:
        """The ``Host`` and ``Origin`` values the HTTP transport accepts: the bound address with its port (IPv6 in
        brackets, in its compressed spelling and in the spelling given), plus ``localhost``; see
        :func:`http_allow_lists`.
        """
        return http_allow_lists(self.host, self.port)

    def policy(self) -> AgentPolicy:
        """The input/output policy of the agent engine: every setting named like a field of
        :class:`~focus_tool.inputs.InputPolicy` (image and text limits) or of :class:`AgentPolicy` (roots, base64,
        URLs, crops) is passed on under that name; the others keep their defaults.
        """
        own = {f.name for f in fields(self)}

        def shared(cls: type[InputPolicy] | type[AgentPolicy]) -> dict[str, object]:
            return {f.name: getattr(self, f.name) for f in fields(cls) if f.init and f.name in own}

        return AgentPolicy(image=InputPolicy(**shared(InputPolicy)), **shared(AgentPolicy))  # type: ignore[arg-type]

    @property
    def max_request_body_size(self) -> int:
        """HTTP body limit: the SDK's 4 MiB, or enough for the base64 cap plus JSON overhead."""
        encoded = 4 * -(-self.max_base64_bytes // 3)
        return max(4 * 1024 * 1024, encoded + 64 * 1024)


_INT_RANGES: dict[str, tuple[str, int, int]] = {  # field -> (flag, lowest, highest)
    "port": ("--port", 1, 65_535),
    "max_crops": ("--max-crops", 1, 8),  # the tools' max_crops argument is 1-8
    "max_base64_bytes": ("--max-base64-bytes", 1, 100_000_000),
    "max_file_bytes": ("--max-file-bytes", 1, 1_000_000_000),
    "max_pixels": ("--max-pixels", 1, 200_000_000),  # past ~179 MP Pillow refuses to decode anyway
    "max_waiting": ("--queue", 0, 10_000),
    "url_workers": ("--url-workers", 1, 64),
}
_SECONDS_RANGES: dict[str, tuple[str, float]] = {  # field -> (flag, highest); every one must be finite and > 0
    "timeout_s": ("--timeout", 86_400.0),
    "url_timeout_s": ("--url-timeout (env FOCUS_URL_TIMEOUT)", 600.0),
}


def _shown(value: object) -> str:
    """A setting's value for an error message: numbers as written, anything else quoted and truncated."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return quote_text(value if isinstance(value, str) else repr(value))


def _normalise_host(host: str) -> str:
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name.lower() in _LOOPBACK_NAMES:
        return name.lower()
    try:
        return ipaddress.ip_address(name).compressed
    except ValueError:
        return name


def _is_loopback(host: str) -> bool:
    name = _normalise_host(host)
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def http_allow_lists(host: str, port: int) -> tuple[list[str], list[str]]:
    """``(allowed Host values, allowed Origin values)`` for a server bound to loopback ``host``:``port``.

    The SDK only switches its DNS-rebinding checks on by itself for the literal hosts ``127.0.0.1``, ``localhost``
    and ``::1``; for any other spelling or loopback address (``127.0.0.2``, ``0:0:0:0:0:0:0:1``) they were off. So
    the lists are always given, built from the bound address: every spelling a client may use for it (an IPv6
    address in brackets, compressed and as given), ``localhost`` (a name no remote DNS answer can take over), each
    with the port (and also without it on port 80, where clients omit it). Origins are the same names under
    ``http://``: the server speaks plain HTTP (a TLS proxy in front sends its own Host).
    """
    given = host.strip().lower()
    if given.startswith("[") and given.endswith("]"):
        given = given[1:-1]
    bound = _normalise_host(host)
    names: list[str] = []
    if bound == "localhost":
        names += ["localhost", "127.0.0.1", "[::1]"]
    else:
        ip = ipaddress.ip_address(bound)
        if isinstance(ip, ipaddress.IPv6Address):
            names += [f"[{ip.compressed}]", f"[{given}]", f"[{ip.exploded}]"]
        else:
            names.append(ip.compressed)
        names.append("localhost")
    names = list(dict.fromkeys(names))
    hosts = [f"{n}:{port}" for n in names] + (names if port == 80 else [])
    origins = [f"http://{h}" for h in hosts]
    return hosts, origins


def _env_bool(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags (shared by ``focus serve``, ``focus-mcp`` and ``python -m mcp_server``)."""
    env = os.environ.get
    parser.add_argument(
        "--allowed-root",
        action="append",
        default=None,
        metavar="DIR",
        help="folder image paths must be under (repeatable; env FOCUS_ALLOWED_ROOTS, separated by "
        f"{os.pathsep!r}); without one, only image_base64 is accepted",
    )
    parser.add_argument("--model", default=env("FOCUS_MODEL"), help="checkpoint folder or hub id (default: embedded)")
    parser.add_argument(
        "--device",
        default=env("FOCUS_DEVICE", DEFAULT_DEVICE),
        choices=DEVICE_CHOICES,
        help="model device (default auto: cuda if PyTorch sees a GPU, else mps, else cpu)",
    )
    parser.add_argument("--transport", default="stdio", choices=["stdio", "streamable-http"], help="MCP transport")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="HTTP host: a loopback address (127.0.0.1, another 127.x, ::1) or localhost; only Host / Origin headers "
        "naming it are served",
    )
    parser.add_argument(
        "--port", type=int, default=ServerSettings.port, help=f"HTTP port (default {ServerSettings.port})"
    )
    parser.add_argument(
        "--no-structured-output",
        action="store_true",
        help="no output schema / structured content (for hosts that then drop the text and images)",
    )
    parser.add_argument("--no-images", action="store_true", help="return text only, no crop images")
    parser.add_argument(
        "--no-result-reuse",
        action="store_true",
        help="run the model on every call, even for an identical repeated request (load tests, timing)",
    )
    parser.add_argument(
        "--max-crops",
        type=int,
        default=ServerSettings.max_crops,
        help=f"upper bound on crops per call (default {ServerSettings.max_crops})",
    )
    parser.add_argument(
        "--max-base64-bytes",
        type=int,
        default=ServerSettings.max_base64_bytes,
        help=f"decoded base64 cap (default {ServerSettings.max_base64_bytes / 1e6:g} MB)",
    )
    parser.add_argument(
        "--max-file-bytes",
        type=int,
        default=ServerSettings.max_file_bytes,
        help=f"image file cap (default {ServerSettings.max_file_bytes / 1e6:g} MB)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=ServerSettings.max_pixels,
        help=f"image pixel cap (default {ServerSettings.max_pixels / 1e6:g} M)",
    )
    parser.add_argument(
        "--allow-urls",
        action="store_true",
        default=None,
        help="fetch http(s) URLs given as image_path (public addresses only, capped at --max-base64-bytes; "
        "env FOCUS_ALLOW_URLS=1); off by default: URLs are refused",
    )
    parser.add_argument(
        "--url-timeout",
        type=float,
        default=None,
        help=f"total seconds per URL download (default {ServerSettings.url_timeout_s:g}; env FOCUS_URL_TIMEOUT)",
    )
    parser.add_argument(
        "--allow-private-urls",
        action="store_true",
        default=None,
        help="with --allow-urls, also fetch from loopback/private addresses (SSRF risk: intranet or tests only; "
        "env FOCUS_ALLOW_PRIVATE_URLS=1)",
    )
    parser.add_argument(
        "--url-workers",
        type=int,
        default=ServerSettings.url_workers,
        help="URL downloads running at once, on their own threads; one more is refused as busy "
        f"(default {ServerSettings.url_workers})",
    )
    parser.add_argument(
        "--queue", type=int, default=ServerSettings.max_waiting, help="calls that may wait behind the running one"
    )
    parser.add_argument(
        "--timeout", type=float, default=ServerSettings.timeout_s, help="longest wait in the queue, seconds"
    )
    parser.add_argument(
        "--log-level", default=env("FOCUS_LOG_LEVEL", "INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """Build settings from parsed flags; ``FOCUS_*`` variables fill the flags not given (roots, URL switches)."""
    roots = args.allowed_root
    if roots is None:
        roots = [r for r in os.environ.get("FOCUS_ALLOWED_ROOTS", "").split(os.pathsep) if r]
    for r in roots:
        shown = quote_text(r, PATH_QUOTE_CHARS)
        if not os.path.isabs(os.path.expanduser(r)):
            raise ConfigError(f"--allowed-root must be an absolute folder, got {shown}")
        if not Path(r).expanduser().is_dir():
            raise ConfigError(f"--allowed-root {shown} is not an existing folder")
    return ServerSettings(
        allowed_roots=tuple(Path(r).expanduser() for r in roots),
        model=args.model or None,
        device=args.device,
        transport=args.transport,
        host=args.host,
        port=args.port,
        structured_output=not args.no_structured_output,
        return_images=not args.no_images,
        reuse_results=not args.no_result_reuse,
        max_crops=args.max_crops,
        max_base64_bytes=args.max_base64_bytes,
        max_file_bytes=args.max_file_bytes,
        max_pixels=args.max_pixels,
        allow_urls=args.allow_urls if args.allow_urls is not None else _env_bool("FOCUS_ALLOW_URLS"),
        url_timeout_s=args.url_timeout
        if args.url_timeout is not None
        else _env_float("FOCUS_URL_TIMEOUT", ServerSettings.url_timeout_s),
        url_allow_private=(
            args.allow_private_urls if args.allow_private_urls is not None else _env_bool("FOCUS_ALLOW_PRIVATE_URLS")
        ),
        url_workers=args.url_workers,
        max_waiting=args.queue,
        timeout_s=args.timeout,
        log_level=args.log_level,
    )
