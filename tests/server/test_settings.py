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
        ("FOCUS_URL_TIMEOUT", "-1", "--url-timeout (env FOCUS_URL_TIMEOUT) must be a number of seconds above 0"),
    ],
)
def test_bad_url_settings_exit_2(
    variable: str, value: str, fragment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 2
    assert fragment in capsys.readouterr().err


INT = "must be an integer between"
SECONDS = "must be a number of seconds above 0 and at most"
BAD_SETTINGS = [  # (flags, the one line must start with this after "error: ")
    (["--max-crops", "0"], f"--max-crops {INT} 1 and 8, got 0"),
    (["--max-crops", "9"], f"--max-crops {INT} 1 and 8, got 9"),
    (["--max-crops", "-1"], f"--max-crops {INT} 1 and 8, got -1"),
    (["--max-base64-bytes", "0"], f"--max-base64-bytes {INT} 1 and 100,000,000, got 0"),
    (["--max-file-bytes", "0"], f"--max-file-bytes {INT} 1 and 1,000,000,000, got 0"),
    (["--max-pixels", "0"], f"--max-pixels {INT} 1 and 200,000,000, got 0"),
    (["--max-pixels", "-40"], f"--max-pixels {INT} 1 and 200,000,000, got -40"),
    (["--queue", "-1"], f"--queue {INT} 0 and 10,000, got -1"),
    (["--url-workers", "0"], f"--url-workers {INT} 1 and 64, got 0"),
    (["--port", "0"], f"--port {INT} 1 and 65,535, got 0"),
    (["--port", "70000"], f"--port {INT} 1 and 65,535, got 70000"),
    (["--timeout", "0"], f"--timeout {SECONDS} 86400, got 0.0"),
    (["--timeout", "-5"], f"--timeout {SECONDS} 86400, got -5.0"),
    (["--timeout", "nan"], f"--timeout {SECONDS} 86400, got nan"),
    (["--timeout", "inf"], f"--timeout {SECONDS} 86400, got inf"),
    (["--url-timeout", "0"], f"--url-timeout (env FOCUS_URL_TIMEOUT) {SECONDS} 600, got 0.0"),
    (["--url-timeout", "nan"], f"--url-timeout (env FOCUS_URL_TIMEOUT) {SECONDS} 600, got nan"),
    (["--url-timeout", "inf"], f"--url-timeout (env FOCUS_URL_TIMEOUT) {SECONDS} 600, got inf"),
    (["--host", "0.0.0.0"], "refusing to listen on '0.0.0.0': the server has no authentication"),
    (["--host", "192.168.1.10"], "refusing to listen on '192.168.1.10'"),
    (["--host", "example.com"], "refusing to listen on 'example.com'"),
    (["--host", "::"], "refusing to listen on '::'"),
]


@pytest.mark.parametrize(("flags", "line"), BAD_SETTINGS, ids=[" ".join(f) for f, _ in BAD_SETTINGS])
@pytest.mark.parametrize("entry", ["focus serve", "focus-mcp"])
def test_bad_setting_is_one_line_and_exit_2_at_start(
    entry: str, flags: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mcp_server.__main__ import main as mcp_main

    code = main(["serve", *flags]) if entry == "focus serve" else mcp_main(flags)
    err = capsys.readouterr().err
    prefix = "focus: error: " if entry == "focus serve" else "focus-mcp: error: "
    assert code == 2
    assert err.startswith(prefix + line) and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-crops", "1"],
        ["--max-crops", "8"],
        ["--queue", "0"],
        ["--timeout", "0.5"],
        ["--url-timeout", "600"],
        ["--url-workers", "64"],
        ["--host", "127.0.0.2"],
        ["--host", "0:0:0:0:0:0:0:1"],
        ["--host", "[::1]"],
        ["--host", "LOCALHOST"],
    ],
)
def test_the_range_ends_are_accepted(flags: list[str]) -> None:
    settings = settings_from_args(build_parser().parse_args(["serve", *flags]))
    assert settings.policy().max_crops >= 1


@pytest.mark.parametrize(
    ("host", "port", "hosts"),
    [
        ("127.0.0.1", 8000, ["127.0.0.1:8000", "localhost:8000"]),
        ("127.0.0.2", 8123, ["127.0.0.2:8123", "localhost:8123"]),
        ("localhost", 8000, ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"]),
        ("::1", 9000, ["[::1]:9000", "[0000:0000:0000:0000:0000:0000:0000:0001]:9000", "localhost:9000"]),
        (
            "0:0:0:0:0:0:0:1",
            9000,
            [
                "[::1]:9000",
                "[0:0:0:0:0:0:0:1]:9000",
                "[0000:0000:0000:0000:0000:0000:0000:0001]:9000",
                "localhost:9000",
            ],
        ),
        ("127.0.0.3", 80, ["127.0.0.3:80", "localhost:80", "127.0.0.3", "localhost"]),
    ],
)
def test_host_and_origin_allow_lists_name_the_bound_address(host: str, port: int, hosts: list[str]) -> None:
    settings = ServerSettings(host=host, port=port)
    allowed_hosts, allowed_origins = settings.http_allow_lists()
    assert allowed_hosts == hosts
    assert allowed_origins == [f"http://{h}" for h in hosts]
    assert not any("*" in h for h in allowed_hosts)  # no wildcard port: only the bound one
    assert settings.bind_host == ("::1" if ":" in host else host.lower())


def test_a_device_name_from_the_environment_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FOCUS_DEVICE", "tpu")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == "focus: error: --device (env FOCUS_DEVICE) must be one of auto, cpu, cuda, mps, got 'tpu'\n"


def test_a_control_character_in_an_allowed_root_is_quoted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--allowed-root", "/no/such\x1b[31m\ndir"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "'/no/such\\x1b[31m\\ndir' is not an existing folder" in err


def test_the_policy_is_built_from_the_settings_fields(tmp_path: Path) -> None:
    settings = ServerSettings(allowed_roots=(tmp_path,), max_pixels=60_000_000, max_file_bytes=100_000_000, max_crops=2)
    policy = settings.policy()
    assert (policy.image.max_pixels, policy.image.max_file_bytes) == (60_000_000, 100_000_000)
    assert (policy.max_pixels, policy.max_file_bytes, policy.max_crops) == (60_000_000, 100_000_000, 2)
    assert policy.allowed_roots == (tmp_path.resolve(),)
