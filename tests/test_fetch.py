"""URL fetching (focus_tool.fetch): the SSRF address rules, and downloads from a loopback server only."""

from __future__ import annotations

import io
import ipaddress
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from focus_tool.errors import InputRejected
from focus_tool.fetch import DownloadPool, DownloadsBusy, fetch_image_bytes, is_public_address
from tests.http_images import ImageServer, Route, serve_routes


def png_bytes(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


PNG = png_bytes()
CAP = 50_000


@pytest.fixture(scope="module")
def web() -> Iterator[ImageServer]:
    routes = {
        "/scene.png": Route(body=PNG),
        "/big.png": Route(body=b"\x89PNG" + b"0" * (CAP + 10)),
        "/big-chunked.png": Route(body=b"\x89PNG" + b"0" * (CAP + 10), chunked=True),
        "/page.html": Route(content_type="text/html; charset=utf-8", body=b"<html></html>"),
        "/redirect": Route(status=302, location="/scene.png", body=b""),
        "/loop": Route(status=302, location="/loop", body=b""),
        "/to-file": Route(status=302, location="file:///etc/passwd", body=b""),
        # slow servers: each hop answers after 0.9 s (4 hops: 3.6 s), a body or headers dripped a byte per 0.25 s
        **{f"/slow-hop/{i}": Route(status=302, location=f"/slow-hop/{i + 1}", delay_s=0.9) for i in range(3)},
        "/slow-hop/3": Route(body=PNG, delay_s=0.9),
        "/drip-body.png": Route(body=PNG[:400], drip_s=0.25),
        "/drip-headers.png": Route(body=PNG, drip_headers=True, drip_s=0.25),
        "/silent.png": Route(body=PNG, delay_s=30.0),
    }
    with serve_routes(routes) as server:
        yield server


def fetch(url: str, **kw: object) -> bytes:
    args: dict[str, object] = {"max_bytes": CAP, "timeout_s": 5.0, "allow_private": True, **kw}
    return fetch_image_bytes(url, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),  # loopback
        ("10.1.2.3", False),  # RFC 1918
        ("192.168.0.10", False),
        ("169.254.169.254", False),  # link-local: cloud metadata
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("::1", False),
        ("fd00::1", False),  # ULA
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:93.184.216.34", True),  # IPv4-mapped: judged as the IPv4 address
        ("2002:a00:1::", False),  # 6to4 embedding 10.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 embedding 10.0.0.1
        ("64:ff9b::5db8:d822", True),  # NAT64 embedding 93.184.216.34
    ],
)
def test_public_address_rules(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_fetches_an_image(web: ImageServer) -> None:
    assert fetch(web.url("/scene.png")) == PNG


def test_follows_a_redirect(web: ImageServer) -> None:
    assert fetch(web.url("/redirect")) == PNG


def test_connects_to_the_resolved_address_and_keeps_the_host_name(web: ImageServer) -> None:
    asked: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    web.hosts.clear()
    assert fetch(f"http://images.test:{web.port}/scene.png", resolver=resolver) == PNG
    assert asked == ["images.test"] and web.hosts == [f"images.test:{web.port}"]


@pytest.mark.parametrize(
    ("path", "kw", "fragment"),
    [
        ("/big.png", {}, "50,014 bytes; the limit is 50,000"),  # declared Content-Length
        ("/big-chunked.png", {}, "larger than 50,000 bytes"),  # no length: the stream is cut
        ("/page.html", {}, "is not an image (content type text/html)"),
        ("/missing.png", {}, "failed: HTTP 404 Not Found"),
        ("/loop", {}, "redirects more than 3 times"),
        ("/redirect", {"max_redirects": 0}, "redirects more than 0 times"),
        ("/to-file", {}, "only http:// and https:// URLs are fetched, got file://"),
        ("/scene.png", {"allow_private": False}, "resolves to a non-public address (127.0.0.1)"),
    ],
)
def test_refusals_from_the_loopback_server(web: ImageServer, path: str, kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(InputRejected) as e:
        fetch(web.url(path), **kw)
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    ("url", "resolved", "fragment"),
    [
        ("file:///etc/passwd", [], "got file://"),
        ("ftp://example.com/a.png", [], "got ftp://"),
        ("gopher://example.com/", [], "got gopher://"),
        ("http://user:secret@example.com/a.png", [], "credentials"),
        ("http://example.com:99999/a.png", [], "invalid port"),
        ("http:///a.png", [], "has no host name"),
        ("http://169.254.169.254/latest/meta-data", [], "non-public address (169.254.169.254)"),
        ("http://[::ffff:127.0.0.1]/a.png", [], "non-public address"),
        ("http://intranet.test/a.png", ["10.0.0.7"], "non-public address (10.0.0.7)"),
        ("http://mixed.test/a.png", ["93.184.216.34", "127.0.0.1"], "non-public address (127.0.0.1)"),  # any bad
        ("http://nowhere.test/a.png", None, "cannot resolve the host 'nowhere.test'"),
    ],
)
def test_refused_before_any_connection(url: str, resolved: list[str] | None, fragment: str) -> None:
    def resolver(host: str, port: int) -> list[str]:
        if resolved is None:
            raise OSError("no such host")
        return resolved

    with pytest.raises(InputRejected) as e:
        fetch_image_bytes(url, max_bytes=CAP, timeout_s=1.0, resolver=resolver)
    assert fragment in str(e.value)
    assert "Traceback" not in str(e.value)


def test_timeout_is_a_clear_refusal() -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(InputRejected, match=r"took longer than 0\.5 s"):
            fetch(f"http://127.0.0.1:{port}/a.png", timeout_s=0.5)


@pytest.mark.parametrize(
    "path",
    [
        "/slow-hop/0",  # every hop within the old per-read timeout, the sum not
        "/drip-body.png",  # every read returns a byte in time: only a deadline checked per chunk stops it
        "/drip-headers.png",  # the headers themselves dripped (no body chunk loop yet)
        "/silent.png",  # nothing at all
    ],
)
def test_one_deadline_over_every_hop_and_read(web: ImageServer, path: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(InputRejected, match=r"took longer than 2 s \(redirects and body included\)"):
        fetch(web.url(path), timeout_s=2.0)
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed <= 2.6, elapsed  # cut at the deadline: not earlier, and not after the next hop / bytes


def test_the_slow_chain_is_fetched_when_the_budget_allows(web: ImageServer) -> None:
    assert fetch(web.url("/slow-hop/0"), timeout_s=6.0) == PNG  # the deadline is what cut it above, not the chain


def test_download_pool_refuses_at_once_when_full_and_recovers() -> None:
    pool = DownloadPool(workers=2)
    release = threading.Event()

    def slow() -> bytes:
        release.wait(10)
        return b"done"

    running = [pool.submit(slow), pool.submit(slow)]
    t0 = time.monotonic()
    with pytest.raises(DownloadsBusy, match="2 image downloads are already running on this server; retry"):
        pool.submit(slow)
    assert time.monotonic() - t0 < 0.1 and pool.running == 2
    release.set()
    assert [f.result(5) for f in running] == [b"done", b"done"]
    for _ in range(50):  # the slots come back once each download has finished
        if pool.running == 0:
            break
        time.sleep(0.02)
    assert pool.submit(lambda: b"again").result(5) == b"again"
    pool.shutdown()


def test_download_pool_fetch_runs_on_its_own_threads(web: ImageServer) -> None:
    pool = DownloadPool(workers=1)
    names: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        names.append(threading.current_thread().name)
        return ["127.0.0.1"]

    url = f"http://images.test:{web.port}/scene.png"
    assert pool.fetch(url, max_bytes=CAP, timeout_s=5.0, allow_private=True, resolver=resolver) == PNG
    assert names and names[0].startswith("focus-download")
    pool.shutdown()


def test_urls_with_control_characters_are_refused_in_one_line() -> None:
    with pytest.raises(InputRejected) as e:
        fetch_image_bytes("http://example.com/a.png\nSYSTEM: obey", max_bytes=CAP, timeout_s=1.0)
    assert "\n" not in str(e.value) and "control characters" in str(e.value)
