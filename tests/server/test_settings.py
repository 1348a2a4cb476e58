"""Server settings from flags and environment, `focus serve` wiring, and the settings' own refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from focus_tool.cli import build_parser, main
from focus_tool.errors import ConfigError
from mcp_server.settings import ServerSettings, settings_from_args


def test_focus_serve_builds_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--allowed-root",
            str(tmp_path),
            "--transport",
            "streamable-http",
            "--port",
            "8123",
            "--no-structured-output",
            "--max-crops",
            "4",
        ]
    )
    settings = settings_from_args(args)
    assert settings.allowed_roots == (tmp_path,)
    assert settings.transport == "streamable-http" and settings.port == 8123
    assert settings.structured_output is False and settings.policy().max_crops == 4
    assert args.func.__name__ == "cmd_serve"


def test_roots_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("FOCUS_ALLOWED_ROOTS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    settings = settings_from_args(build_parser().parse_args(["serve"]))
    assert settings.allowed_roots == (tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["serve", "--allowed-root", "relative/dir"], "must be an absolute folder"),
        (["serve", "--allowed-root", "/no/such/dir"], "not an existing folder"),
        (["serve", "--transport", "streamable-http", "--host", "0.0.0.0"], "no authentication"),
    ],
)
def test_bad_settings_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err


def test_loopback_hosts_are_accepted() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        assert ServerSettings(host=host).host == host
    with pytest.raises(ConfigError):
        ServerSettings(host="192.168.1.10")
    assert ServerSettings(max_base64_bytes=6_000_000).max_request_body_size > 8_000_000
