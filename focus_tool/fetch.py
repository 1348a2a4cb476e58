"""Fetch an image over http(s) for the agent surfaces, behind an SSRF guard (docs/agents.md, "URL inputs").

Only used when a server or tool enables URL inputs (``AgentPolicy.allow_urls``; off by default). Then:

- only ``http://`` and ``https://``; no credentials in the URL;
- the host is resolved once and *every* address must be public (``is_global``, not multicast, no embedded private
  IPv4 in mapped / 6to4 / NAT64 addresses) unless ``allow_private`` is set (intranet or loopback tests);
- the connection goes to the validated address (the ``Host`` header and the TLS SNI / certificate check keep the
  name), so a second DNS answer cannot point it elsewhere (DNS rebinding); proxies from the environment are ignored;
- redirects are followed by hand, at most ``max_redirects`` hops, each hop validated like the first URL;
- the body is streamed with a byte cap (``Content-Length`` checked first);
- one absolute deadline covers the whole download: connecting, every redirect hop, the headers and every body read.
  Each socket operation gets the time left as its timeout (through a wrapping ``httpcore`` network backend), and the
  time left is checked again before each body chunk, so neither a server that answers each hop slowly nor one that
  drips its headers or body a byte at a time can stretch it (before, both passed: 14 s and 43 s with a 4 s budget);
- the response must be ``200`` with an ``image/*`` content type. The caller then decodes the bytes with the same
  checks as a file (formats, pixel cap).

Downloads run on a :class:`DownloadPool` of their own (a few threads, one more download refused as busy), so slow
URLs never hold the threads or the queue of the model.

Every refusal is an :class:`~focus_tool.errors.InputRejected` naming the rule; ``httpcore`` (the transport under
``httpx``) is imported on first use.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from focus_tool.errors import FocusError, InputRejected, quote_text

if TYPE_CHECKING:
    import httpcore

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
"""``resolver(host, port) -> IP address strings``; raises ``OSError`` when the name does not resolve."""

SCHEMES: tuple[str, ...] = ("http", "https")
_REDIRECTS = (301, 302, 303, 307, 308)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for ``host`` (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True when ``ip`` is globally routable and embeds no private IPv4 (mapped, 6to4, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # judged as the IPv4 (same on 3.11-3.13)
        return is_public_address(ip.ipv4_mapped)
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return all(is_public_address(v4) for v4 in embedded)
    return True


def _short(url: str) -> str:
    """A caller's URL for a one-line message: quoted, control characters escaped, cut after 200 characters."""
    return quote_text(url, 200)


def _pinned_target(url: str, *, allow_private: bool, resolver: Resolver) -> tuple[str, str, str]:
    """Validate one URL; returns (URL with the host replaced by a validated IP, Host header value, host name)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InputRejected(
            f"only http:// and https:// URLs are fetched, got {scheme}://; pass a local file as an absolute "
            "image_path, or the bytes as image_base64"
        )
    if parts.username is not None or parts.password is not None:
        raise InputRejected("URLs with credentials (user:password@host) are refused; use a public image URL")
    host = parts.hostname
    if not host:
        raise InputRejected(f"the URL {_short(url)} has no host name")
    if any(c in url for c in "\r\n\t ") or not url.isprintable():
        raise InputRejected(f"the URL {_short(url)} contains spaces or control characters; percent-encode them")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise InputRejected(f"the URL {_short(url)} has an invalid port") from None
    try:
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
        except (OSError, UnicodeError, ValueError):
            raise InputRejected(f"cannot resolve the host {quote_text(host)} of {_short(url)}; check the URL") from None
        if not addresses:
            raise InputRejected(f"the host {quote_text(host)} has no address; check the URL")
    if not allow_private:
        blocked = [str(a) for a in addresses if not is_public_address(a)]
        if blocked:
            raise InputRejected(
                f"{quote_text(host)} resolves to a non-public address ({blocked[0]}); this server fetches public URLs "
                "only"
            )
    ip = addresses[0]
    ip_text = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    netloc = ip_text if parts.port is None else f"{ip_text}:{port}"
    pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    try:
        name = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InputRejected(f"the host name of {_short(url)} is not a valid internet name; check the URL") from None
    host_header = name if parts.port is None else f"{name}:{port}"
    return pinned, host_header, host


class DownloadsBusy(FocusError):
    """Every download slot is taken; retry in a few seconds."""


class DownloadPool:
    """At most ``workers`` downloads at once, on threads of their own; one more is refused at once as busy.

    The surfaces run each call on a worker thread; a download run there would hold that thread (and, in the MCP
    server, one of the event loop's worker threads) for its whole deadline: 40 slow URLs once held every one. Here a
    download holds a pool thread instead, admission never waits, and the model's queue is not touched (the image
    is fetched before a queue slot is taken). Threads start on first use. Thread-safe.
    """

    def __init__(self, workers: int = 4) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._running = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[[], bytes]) -> Future[bytes]:
        """Start ``fn`` on a pool thread; raises :class:`DownloadsBusy` when ``workers`` downloads are running."""
        with self._lock:
            if self._running >= self.workers:
                raise DownloadsBusy(
                    f"{self.workers} image downloads are already running on this server; retry in a few seconds, or "
                    "send the image as image_base64"
                )
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="focus-download")
            future = self._executor.submit(fn)
            self._running += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[bytes]) -> None:
        with self._lock:
            self._running -= 1

    def fetch(self, url: str, *, timeout_s: float, **kwargs: Any) -> bytes:
        """:func:`fetch_image_bytes` on a pool thread; the calling thread waits for it (a sync surface's caller).

        ``kwargs`` are the other arguments of :func:`fetch_image_bytes`. The download stops itself at its deadline;
        the wait allows one more second for the thread to hand over the refusal.
        """
        future = self.submit(functools.partial(fetch_image_bytes, url, timeout_s=timeout_s, **kwargs))
        try:
            return future.result(timeout=timeout_s + 1.0)
        except FutureTimeout:
            raise InputRejected(
                f"fetching {_short(url)} took longer than {timeout_s:g} s; download it yourself"
            ) from None

    @property
    def running(self) -> int:
        """Downloads in progress now."""
        return self._running

    def shutdown(self) -> None:
        """Stop the threads once the running downloads end (each ends by its own deadline)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


@functools.cache
def _deadline_backend_class() -> Callable[[float], httpcore.NetworkBackend]:
    """An ``httpcore`` network backend whose every connect, read, write and TLS handshake times out at one absolute
    deadline: each socket operation gets ``min(its own timeout, time left)``; none starts once time is up.
    """
    import httpcore

    def left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error("the download deadline has passed")
        return remaining if timeout is None else min(timeout, remaining)

    class DeadlineStream(httpcore.NetworkStream):
        def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
            self._inner = inner
            self._deadline = deadline

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, left(self._deadline, timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, left(self._deadline, timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ) -> httpcore.NetworkStream:
            tls = self._inner.start_tls(
                ssl_context, server_hostname, left(self._deadline, timeout, httpcore.ConnectTimeout)
            )
            return DeadlineStream(tls, self._deadline)

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class DeadlineBackend(httpcore.NetworkBackend):
        def __init__(self, deadline: float) -> None:
            self._inner = httpcore.SyncBackend()
            self._deadline = deadline

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore.NetworkStream:
            wait = left(self._deadline, timeout, httpcore.ConnectTimeout)
            stream = self._inner.connect_tcp(host, port, wait, local_address, socket_options)
            return DeadlineStream(stream, self._deadline)

        def connect_unix_socket(
            self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
        ) -> httpcore.NetworkStream:
            raise httpcore.UnsupportedProtocol("unix sockets are not fetched")

        def sleep(self, seconds: float) -> None:
            time.sleep(max(0.0, min(seconds, self._deadline - time.monotonic())))

    return DeadlineBackend


def fetch_image_bytes(
    url: str,
    *,
    max_bytes: int,
    timeout_s: float,
    max_redirects: int = 3,
    allow_private: bool = False,
    resolver: Resolver = system_resolver,
) -> bytes:
    """Download an image under the guard above and return its bytes.

    Args:
        url: the ``http://`` or ``https://`` URL a caller gave.
        max_bytes: largest body accepted; a larger ``Content-Length`` or body is refused.
        timeout_s: one absolute budget for the whole download: connecting, every redirect hop, headers, every read.
        max_redirects: redirect hops followed, each re-validated; one more is refused.
        allow_private: accept loopback / private / link-local addresses (off: public addresses only).
        resolver: host-name resolution (injectable for tests).

    Raises:
        InputRejected: with the rule that failed (scheme, address, status, content type, size, time).
    """
    try:
        import httpcore
    except ImportError:
        raise InputRejected(
            "URL inputs need the httpcore package on the server; install focus-tool[mcp] or send the image bytes"
        ) from None
    deadline = time.monotonic() + timeout_s
    too_slow = InputRejected(
        f"fetching {_short(url)} took longer than {timeout_s:g} s (redirects and body included); download it "
        "yourself and pass the file or image_base64"
    )
    current = url
    backend = _deadline_backend_class()(deadline)
    with httpcore.ConnectionPool(network_backend=backend, retries=0, max_connections=1) as pool:
        for hop in range(max_redirects + 1):
            pinned, host_header, host = _pinned_target(current, allow_private=allow_private, resolver=resolver)
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # resolving took the budget
                raise too_slow
            extensions: dict[str, Any] = {
                "timeout": {"connect": remaining, "read": remaining, "write": remaining, "pool": remaining}
            }
            if pinned.startswith("https:"):
                extensions["sni_hostname"] = host
            headers = [("Host", host_header), ("Accept", "image/*"), ("User-Agent", "focus-tool")]
            try:
                with pool.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    status = response.status
                    fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                    if status in _REDIRECTS and "location" in fields:
                        current = urljoin(current, fields["location"])
                        logger.debug("redirect %d: %s", hop + 1, _short(current))
                        continue
                    reason = response.extensions.get("reason_phrase", b"")
                    return _read_image_body(
                        response,
                        status=status,
                        reason=reason.decode("latin-1") if isinstance(reason, bytes) else "",
                        fields=fields,
                        url=url,
                        max_bytes=max_bytes,
                        deadline=deadline,
                        too_slow=too_slow,
                    )
            except httpcore.TimeoutException:
                raise too_slow from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
                raise InputRejected(f"cannot fetch {_short(url)} ({type(e).__name__}); check the URL") from None
    raise InputRejected(f"{_short(url)} redirects more than {max_redirects} times; pass the final image URL")


def _read_image_body(
    response: httpcore.Response,
    *,
    status: int,
    reason: str,
    fields: dict[str, str],
    url: str,
    max_bytes: int,
    deadline: float,
    too_slow: InputRejected,
) -> bytes:
    """Check status, content type and length of a streamed response, then read at most ``max_bytes`` by the
    deadline (checked before every chunk; each read also times out at it).
    """
    if status != 200:
        raise InputRejected(f"fetching {_short(url)} failed: HTTP {status} {reason}".rstrip())
    ctype = fields.get("content-type", "").split(";", 1)[0].strip().lower()
    if not ctype.startswith("image/"):
        raise InputRejected(
            f"{_short(url)} is not an image (content type {ctype[:80] or 'missing'}); pass the URL of the image itself"
        )
    declared = fields.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InputRejected(
            f"{_short(url)} is {int(declared):,} bytes; the limit is {max_bytes:,}; use a smaller image"
        )
    data = bytearray()
    chunks = iter(response.iter_stream())
    while True:
        if time.monotonic() >= deadline:
            raise too_slow
        chunk = next(chunks, None)
        if chunk is None:
            return bytes(data)
        data += chunk
        if len(data) > max_bytes:
            raise InputRejected(f"{_short(url)} is larger than {max_bytes:,} bytes; use a smaller image")
