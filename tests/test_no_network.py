"""The conftest's guard holds: no test can reach a host outside this machine."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import NetworkBlocked


def test_the_network_is_out_of_reach() -> None:
    """The guard above holds: a public address and a public name are refused before any packet is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(NetworkBlocked, match="connect"):
        s.connect(("93.184.216.34", 80))
    with pytest.raises(NetworkBlocked, match="name lookup"):
        socket.getaddrinfo("example.com", 80)
    assert socket.getaddrinfo("127.0.0.1", 80)  # loopback literals still resolve
