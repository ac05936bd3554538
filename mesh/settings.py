"""The configuration file: one TOML file sets the options of `feedserve up` ([up]) and of every service ([gateway],
[paramserver], [ranker], [generator]), read by `feedserve up` and by each service (`--config`, or $FEEDSERVE_CONFIG),
each key an option's long name as `--help` spells it. A flag on the command line wins over the environment
($FEEDSERVE_HOME, $FEEDSERVE_STORE, $FEEDSERVE_TRANSPORT), the environment over the file, the file over the
defaults. An unknown section or key, or a bad value, is refused at start, naming it."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_ENV", "SECTIONS", "ConfigError", "Setting", "add_config_argument", "apply_section", "config_path",
           "effective", "load_config", "parse_args"]

CONFIG_ENV = "FEEDSERVE_CONFIG"
SECTIONS = ("up", "gateway", "paramserver", "ranker", "generator")
# options whose default comes from the environment when it is set (origin "environment")
ENVIRONMENT = {"home": "FEEDSERVE_HOME", "store": "FEEDSERVE_STORE", "transport": "FEEDSERVE_TRANSPORT"}


class ConfigError(ValueError):
    """The configuration file cannot be read, or names a section, key or value no parser accepts."""


@dataclass(frozen=True)
class Setting:
    """One option's effective value and where it came from: default, file, environment or flag."""

    option: str
    value: Any
    origin: str


def config_path(argv: Sequence[str] | None = None) -> Path | None:
    """The file named by `--config PATH` (or `--config=PATH`) in argv, else $FEEDSERVE_CONFIG, else none."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for n, arg in enumerate(argv):
        if arg == "--config" and n + 1 < len(argv):
            return Path(argv[n + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None


def load_config(path: Path) -> dict[str, dict[str, Any]]:
    """The file's sections; ConfigError naming the file and what is wrong (a missing file, TOML syntax, a section
    no service has, a key outside a section)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for name, section in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{name}]; the sections are {', '.join(SECTIONS)}")
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: `{name}` must be a section ([{name}]), not a value")
    return data


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help=f"a TOML configuration file; its [{parser.prog.split()[-1]}] section sets this command's "
                             f"options by their long names; flags win over it (default: ${CONFIG_ENV}, if set)")


def _action(parser: argparse.ArgumentParser, option: str) -> argparse.Action | None:
    # argparse lists its options only in _actions (no public accessor); read-only use
    return next((a for a in parser._actions if f"--{option}" in a.option_strings), None)


def _convert(action: argparse.Action, where: str, value: Any) -> Any:
    """A TOML value as the option's parsed value, checked as its flag would be."""
    if action.nargs == 0:  # a flag: true or false
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: a flag, so true or false (got {value!r})")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        flag = action.const if action.const is not None else True
        if not value:
            return action.default
        return flag
    many = action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction)
    if isinstance(value, list) != many:
        raise ConfigError(f"{where}: {'a list of values' if many else 'one value, not a list'} (got {value!r})")
    values = value if many else [value]
    converted = []
    for item in values:
        if isinstance(item, (dict, list)):
            raise ConfigError(f"{where}: a plain value (got {item!r})")
        text = str(item).lower() if isinstance(item, bool) else str(item)
        try:
            checked = action.type(text) if callable(action.type) else text
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(f"{where}: not a valid value ({exc})") from None
        if action.choices is not None and checked not in action.choices:
            raise ConfigError(f"{where}: one of {', '.join(map(str, action.choices))} (got {item!r})")
        converted.append(checked)
    return converted if many else converted[0]


def apply_section(parser: argparse.ArgumentParser, path: Path, name: str, section: dict[str, Any],
                  refused: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Check `section` against `parser`'s options and make its values the parser's defaults (flags still win);
    returns them by option name. ConfigError naming `[name] key` for an unknown key, a bad value, or a key in
    `refused` (what `feedserve up` sets itself)."""
    applied: dict[str, Any] = {}
    for key, value in section.items():
        where = f"{path}: [{name}] {key}"
        option = key.removeprefix("--")
        if option in refused:
            raise ConfigError(f"{where}: feedserve up sets --{option} itself; set it in [up] (ports, hosts, store)")
        action = _action(parser, option)
        if action is None or option in ("help", "config"):
            raise ConfigError(f"{where}: unknown key: {name} has no option --{option} "
                              f"(see {'feedserve up' if name == 'up' else 'python -m ' + name} --help)")
        if option == "store" and "@" in str(value) and ":" in str(value).split("@")[0].split("//")[-1]:
            raise ConfigError(f"{where}: a store URL with a password does not belong in a file; put it in "
                              f"$FEEDSERVE_STORE")
        applied[option] = _convert(action, where, value)
        if option in ENVIRONMENT and os.environ.get(ENVIRONMENT[option]):
            continue  # the environment wins over the file (checked all the same)
        parser.set_defaults(**{action.dest: applied[option]})
    return applied


def parse_args(parser: argparse.ArgumentParser, name: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """A service's (or `feedserve up`'s) arguments with its section of the configuration file as defaults; a bad
    file exits with status 2 and the message, as a bad flag does."""
    if _action(parser, "config") is None:
        add_config_argument(parser)
    path = config_path(argv)
    if path is not None:
        try:
            apply_section(parser, path, name, load_config(path).get(name, {}))
        except ConfigError as exc:
            parser.error(str(exc))
    return parser.parse_args(argv)


def _given(argv: Sequence[str], action: argparse.Action) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv for flag in action.option_strings
               if flag.startswith("--")) or any(arg == f"--no-{flag[2:]}" for arg in argv
                                               for flag in action.option_strings if flag.startswith("--"))


def effective(parser: argparse.ArgumentParser, name: str, section: dict[str, Any], path: Path | None,
              argv: Sequence[str] = ()) -> list[Setting]:
    """Every long option of `parser` with its effective value and origin, given the file's `section` and `argv`."""
    if path is not None:
        apply_section(parser, path, name, section)
    args = vars(parser.parse_args(list(argv)))
    settings = []
    for action in parser._actions:
        longs = [flag for flag in action.option_strings if flag.startswith("--")]  # --idle-class before --no-idle-class
        if not longs or action.dest in ("help", "config"):
            continue
        option = longs[0][2:]
        if _given(argv, action):
            origin = "flag"
        elif option in ENVIRONMENT and os.environ.get(ENVIRONMENT[option]):
            origin = "environment"
        elif option in section or f"--{option}" in section:
            origin = "file"
        else:
            origin = "default"
        settings.append(Setting(option, args.get(action.dest), origin))
    return settings
