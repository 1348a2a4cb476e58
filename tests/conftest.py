"""Shared test setup: no test reaches the network.

- ``HF_HUB_OFFLINE=1``: transformers never asks the hub for model files (also for the CLI subprocesses, which
  inherit the environment).
- In this process, a connection to anything but a loopback address, and a name lookup for anything but
  ``localhost`` or an IP literal, raise :class:`NetworkBlocked` (not an ``OSError``, so no code under test mistakes
  it for an ordinary network failure). Tests that fetch URLs serve them from a loopback server or inject a resolver.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class NetworkBlocked(RuntimeError):
    """A test tried to reach a host outside this machine."""


def _is_local(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like never leave the machine
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_literal_or_local(host: object) -> bool:
    if host is None or not isinstance(host, str | bytes):
        return True
    name = host.decode() if isinstance(host, bytes) else host
    if name in ("", "localhost"):
        return True
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if not _is_local(host):
            raise NetworkBlocked(f"tests do not reach the network: connect to {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_literal_or_local(host):
            raise NetworkBlocked(f"tests do not reach the network: name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = real_getaddrinfo
