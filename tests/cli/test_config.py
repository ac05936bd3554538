"""One configuration file: `feedserve up --config` and every service read their sections of it, a flag wins over
it, a bad key or value is refused at start naming it, and `feedserve config show` reports each value's origin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.settings import CONFIG_ENV, ConfigError, load_config, parse_args


def _feedserve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feedserve.toml"
    path.write_text(text)
    return path


def test_a_service_takes_its_section_and_a_flag_wins_over_it(tmp_path: Path) -> None:
    """The ranker's [ranker] section becomes its options (--config or $FEEDSERVE_CONFIG); a flag given on the
    command line wins; another service's section does not touch it."""
    from ranker.__main__ import build_parser

    path = _file(tmp_path, '[ranker]\ncascade-keep = 120\nno-diversify = true\nprecision = "int8"\n'
                           '[gateway]\ncache-ttl-s = 0\n')
    args = parse_args(build_parser(), "ranker", ["--config", str(path)])
    assert (args.cascade_keep, args.no_diversify, args.precision) == (120, True, "int8")
    args = parse_args(build_parser(), "ranker", ["--config", str(path), "--cascade-keep", "40"])
    assert args.cascade_keep == 40
    os.environ[CONFIG_ENV] = str(path)
    try:
        assert parse_args(build_parser(), "ranker", []).cascade_keep == 120
    finally:
        del os.environ[CONFIG_ENV]


@pytest.mark.parametrize(("text", "message"), [
    ("[ranker]\ncascade-keeps = 3\n", r"\[ranker\] cascade-keeps: unknown key: ranker has no option --cascade-keeps"),
    ('[paramserver]\nmax-travel-per-hour = "far"\n', r"\[paramserver\] max-travel-per-hour: not a valid value"),
    ('[paramserver]\nfsync = "sometimes"\n', r"\[paramserver\] fsync: one of always, interval"),
    ("[ranker]\nno-diversify = 1\n", r"\[ranker\] no-diversify: a flag, so true or false"),
])
def test_a_bad_key_or_value_stops_a_service_at_start_naming_it(tmp_path: Path, text: str, message: str) -> None:
    """A service started on a file with an unknown key or a value its option refuses exits with status 2 and a
    message naming the file, the section and the key."""
    service = text.split("]")[0].lstrip("[")
    result = subprocess.run([sys.executable, "-m", service, "--config", str(_file(tmp_path, text))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert str(tmp_path / "feedserve.toml") in result.stderr
    assert __import__("re").search(message, result.stderr), result.stderr


def test_the_file_itself_is_checked(tmp_path: Path) -> None:
    """A section no service has, TOML that does not parse, a missing file and a store URL holding a password are
    each refused, naming the file and what is wrong."""
    with pytest.raises(ConfigError, match=r"unknown section \[ledger\]"):
        load_config(_file(tmp_path, "[ledger]\nport = 1\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_file(tmp_path, "[ranker\n"))
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(tmp_path / "absent.toml")
    path = _file(tmp_path, '[ranker]\nstore = "postgresql://feedserve:hunter2@db/feedserve"\n')
    from ranker.__main__ import build_parser

    with pytest.raises(SystemExit):
        parse_args(build_parser(), "ranker", ["--config", str(path)])


def test_up_refuses_a_bad_file_before_starting_anything(tmp_path: Path) -> None:
    """`feedserve up --config` checks [up] against its own options and every service section against that
    service's, before it builds or starts anything: an unknown key, and an option up sets itself, exit 2."""
    for text, message in (("[ranker]\ncascade-keeps = 3\n", "[ranker] cascade-keeps: unknown key"),
                          ("[up]\ngateway-prot = 1\n", "[up] gateway-prot: unknown key"),
                          ("[gateway]\nport = 9\n", "[gateway] port: feedserve up sets --port itself")):
        result = _feedserve("up", "--home", str(tmp_path / "home"), "--config", str(_file(tmp_path, text)))
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "home").exists()


def test_config_show_reports_every_value_with_its_origin(tmp_path: Path) -> None:
    """`feedserve config show --json`: each option of up and of every service with its value and origin:
    default, file, environment ($FEEDSERVE_HOME) and flag (up's own after --, and a service's by --set)."""
    path = _file(tmp_path, '[up]\ngateway-port = 9100\n[ranker]\ncascade-keep = 120\n[gateway]\ncache-ttl-s = 5\n')
    result = _feedserve("config", "show", "--config", str(path), "--json", "--set", "gateway.cache-ttl-s=0", "--",
                        "--ranker-port", "9200", env={"FEEDSERVE_HOME": str(tmp_path / "h")})
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["file"] == str(path)
    sections = {name: {s["option"]: (s["value"], s["origin"]) for s in settings}
                for name, settings in shown["sections"].items()}
    assert sections["up"]["gateway-port"] == (9100, "file")
    assert sections["up"]["ranker-port"] == (9200, "flag")
    assert sections["up"]["home"] == (str(tmp_path / "h"), "environment")
    assert sections["up"]["paramserver-port"][1] == "default"
    assert sections["ranker"]["cascade-keep"] == (120, "file")
    assert sections["gateway"]["cache-ttl-s"] == (0.0, "flag")
    assert "port" not in sections["ranker"]  # up sets it: not the operator's to configure here
    text = _feedserve("config", "show", "--config", str(path), env={"FEEDSERVE_HOME": str(tmp_path / "h")})
    assert "[ranker]" in text.stdout and "cascade-keep" in text.stdout and "file" in text.stdout
