"""Fetch an image over http(s) for the agent surfaces, with the SSRF guard of ``../shared/docs/ecosystem.md`` §6.4.

Only used when a server or tool enables URL inputs (``AgentPolicy.allow_urls``; off by default). Then:

- only ``http://`` and ``https://``; no credentials in the URL;
- the host is resolved once and *every* address must be public (``is_global``, not multicast, no embedded private
  IPv4 in mapped / 6to4 / NAT64 addresses) unless ``allow_private`` is set (intranet or loopback tests);
- the connection goes to the validated address (the ``Host`` header and the TLS SNI / certificate check keep the
  name), so a second DNS answer cannot point it elsewhere (DNS rebinding); proxies from the environment are ignored;
- redirects are followed by hand, at most ``max_redirects`` hops, each hop validated like the first URL;
- the body is streamed with a byte cap (``Content-Length`` checked first) and a total time budget;
- the response must be ``200`` with an ``image/*`` content type. The caller then decodes the bytes with the same
  checks as a file (formats, pixel cap).

Every refusal is an :class:`~focus_tool.errors.InputRejected` naming the rule; ``httpx`` is imported on first use.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit, urlunsplit

from focus_tool.errors import InputRejected

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]
"""``resolver(host, port) -> IP address strings``; raises ``OSError`` when the name does not resolve."""

SCHEMES: tuple[str, ...] = ("http", "https")
_REDIRECTS = (301, 302, 303, 307, 308)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CHUNK = 64 * 1024


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
    return url if len(url) <= 200 else url[:197] + "..."


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
            raise InputRejected(f"cannot resolve the host {host!r} of {_short(url)}; check the URL") from None
        if not addresses:
            raise InputRejected(f"the host {host!r} has no address; check the URL")
    if not allow_private:
        blocked = [str(a) for a in addresses if not is_public_address(a)]
        if blocked:
            raise InputRejected(
                f"{host} resolves to a non-public address ({blocked[0]}); this server fetches public URLs only"
            )
    ip = addresses[0]
    ip_text = f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)
    netloc = ip_text if parts.port is None else f"{ip_text}:{port}"
    pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = parts.netloc.rpartition("@")[2]
    return pinned, host_header, host


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
        timeout_s: total time budget for all hops (also the connect / read timeout of each).
        max_redirects: redirect hops followed, each re-validated; one more is refused.
        allow_private: accept loopback / private / link-local addresses (off: public addresses only).
        resolver: host-name resolution (injectable for tests).

    Raises:
        InputRejected: with the rule that failed (scheme, address, status, content type, size, time).
    """
    try:
        import httpx
    except ImportError:
        raise InputRejected(
            "URL inputs need the httpx package on the server; install focus-tool[mcp] or send the image bytes"
        ) from None
    deadline = time.monotonic() + timeout_s
    current = url
    with httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False) as client:
        for hop in range(max_redirects + 1):
            pinned, host_header, host = _pinned_target(current, allow_private=allow_private, resolver=resolver)
            extensions = {"sni_hostname": host} if pinned.startswith("https:") else {}
            try:
                with client.stream(
                    "GET", pinned, headers={"Host": host_header, "Accept": "image/*"}, extensions=extensions
                ) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        logger.debug("redirect %d: %s", hop + 1, _short(current))
                        continue
                    return _read_image_body(response, url=url, max_bytes=max_bytes, deadline=deadline)
            except httpx.TimeoutException:
                raise InputRejected(
                    f"fetching {_short(url)} timed out after {timeout_s:g} s; download it yourself"
                ) from None
            except httpx.HTTPError as e:
                raise InputRejected(f"cannot fetch {_short(url)} ({type(e).__name__}); check the URL") from None
    raise InputRejected(f"{_short(url)} redirects more than {max_redirects} times; pass the final image URL")


def _read_image_body(response: httpx.Response, *, url: str, max_bytes: int, deadline: float) -> bytes:
    """Check status, content type and length of a streamed response, then read at most ``max_bytes``."""
    if response.status_code != 200:
        reason = response.reason_phrase or ""
        raise InputRejected(f"fetching {_short(url)} failed: HTTP {response.status_code} {reason}".rstrip())
    ctype = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not ctype.startswith("image/"):
        raise InputRejected(
            f"{_short(url)} is not an image (content type {ctype or 'missing'}); pass the URL of the image itself"
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InputRejected(
            f"{_short(url)} is {int(declared):,} bytes; the limit is {max_bytes:,}; use a smaller image"
        )
    data = bytearray()
    for chunk in response.iter_bytes(_CHUNK):
        data += chunk
        if len(data) > max_bytes:
            raise InputRejected(f"{_short(url)} is larger than {max_bytes:,} bytes; use a smaller image")
        if time.monotonic() > deadline:
            raise InputRejected(f"fetching {_short(url)} took too long; download it yourself")
    return bytes(data)
