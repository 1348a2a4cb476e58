"""The network guard holds: pytest-socket's --allow-hosts (pyproject.toml) admits loopback only."""

from __future__ import annotations

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_a_public_address_is_refused_before_any_packet() -> None:
    # pytest-socket also warns (UserWarning), which filterwarnings = error would make the failure by itself
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s,
        pytest.warns(UserWarning, match="93.184.216.34"),
        pytest.raises(SocketConnectBlockedError),
    ):
        s.connect(("93.184.216.34", 80))


def test_loopback_stays_open() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            conn, _ = server.accept()
            conn.close()
