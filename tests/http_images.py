"""A loopback HTTP server for the URL-input tests: fixed routes, run in a thread, never reachable from outside."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Route:
    """One response: status, content type, body; ``location`` for redirects; ``chunked`` omits Content-Length.

    Slow servers: ``delay_s`` waits before answering; ``drip_s`` sends the body one byte every ``drip_s`` seconds,
    ``drip_headers`` the status line and headers too.
    """

    status: int = 200
    content_type: str = "image/png"
    body: bytes = b""
    location: str = ""
    chunked: bool = False
    delay_s: float = 0.0
    drip_s: float = 0.0
    drip_headers: bool = False


@dataclass
class ImageServer:
    """Where the server listens and the Host headers it received."""

    port: int
    hosts: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def serve_routes(routes: dict[str, Route]) -> Iterator[ImageServer]:
    """Serve ``routes`` (path -> Route) on 127.0.0.1 with a free port until the block ends; 404 for other paths."""
    info = ImageServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            info.hosts.append(self.headers.get("Host", ""))
            route = routes.get(self.path.split("?", 1)[0], Route(status=404, content_type="text/plain", body=b"no"))
            time.sleep(route.delay_s)
            if route.drip_headers or route.drip_s:
                self._drip(route)
                return
            self.send_response(route.status)
            self.send_header("Content-Type", route.content_type)
            if route.location:
                self.send_header("Location", route.location)
            if route.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(route.body), 8192):
                    piece = route.body[i : i + 8192]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def _drip(self, route: Route) -> None:
            head = f"HTTP/1.1 {route.status} X\r\nContent-Type: {route.content_type}\r\n"
            if route.location:
                head += f"Location: {route.location}\r\n"
            head = (head + f"Content-Length: {len(route.body)}\r\n\r\n").encode()
            pace = route.drip_s or 0.5
            self._slowly(head, pace if route.drip_headers else 0.0)
            self._slowly(route.body, route.drip_s)

        def _slowly(self, data: bytes, pace: float) -> None:
            if not pace:
                self.wfile.write(data)
                self.wfile.flush()
                return
            for i in range(len(data)):  # until the client hangs up (BrokenPipe ends the handler)
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(pace)

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up early is expected here
                super().handle_error(request, client_address)  # type: ignore[arg-type]

    Handler.protocol_version = "HTTP/1.1"
    server = Server(("127.0.0.1", 0), Handler)
    info.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
