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
            "--no-result-reuse",
        ]
    )
    settings = settings_from_args(args)
    assert settings.allowed_roots == (tmp_path,)
    assert settings.transport == "streamable-http" and settings.port == 8123
    assert settings.structured_output is False and settings.policy().max_crops == 4
    assert settings.reuse_results is False
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


def test_url_switches_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    off = settings_from_args(build_parser().parse_args(["serve"]))
    assert off.policy().allow_urls is False and off.policy().url_allow_private is False
    on = settings_from_args(build_parser().parse_args(["serve", "--allow-urls", "--url-timeout", "4"]))
    assert on.policy().allow_urls is True and on.policy().url_timeout_s == 4.0
    assert on.policy().url_allow_private is False
    monkeypatch.setenv("FOCUS_ALLOW_URLS", "yes")
    monkeypatch.setenv("FOCUS_URL_TIMEOUT", "2.5")
    env = settings_from_args(build_parser().parse_args(["serve"]))
    assert env.allow_urls is True and env.url_timeout_s == 2.5


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("FOCUS_ALLOW_URLS", "maybe", "FOCUS_ALLOW_URLS must be 1/true/yes/on"),
        ("FOCUS_URL_TIMEOUT", "soon", "FOCUS_URL_TIMEOUT must be a number"),
        ("FOCUS_URL_TIMEOUT", "-1", "URL timeout must be > 0"),
    ],
)
def test_bad_url_settings_exit_2(
    variable: str, value: str, fragment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 2
    assert fragment in capsys.readouterr().err
