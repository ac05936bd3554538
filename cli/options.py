"""`feedserve up --set SERVICE.OPTION=VALUE` and the configuration file's service sections: any option of any service,
checked against that service's own parser before anything starts (an unknown service, option or value is an error
naming it, not a child that dies later); and the effective configuration with each value's origin."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mesh.settings import Setting, apply_section, effective, load_config

__all__ = ["SERVICES", "STACK_OPTIONS", "check_service_sections", "service_options", "show_config"]

SERVICES = ("gateway", "paramserver", "ranker", "generator")
# What `feedserve up` itself gives each service: how they find each other and their state, and their certificates.
STACK_OPTIONS = frozenset({"host", "port", "store", "schema", "state-dir", "shard", "slots", "paramserver", "ranker",
                           "generator", "routing", "home", "encoder-home", "keys", "no-auth", "tls-ca", "tls-cert",
                           "tls-key"})


def _parser(service: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = importlib.import_module(f"{service}.__main__").build_parser()
    return parser


def _action(parser: argparse.ArgumentParser, option: str) -> argparse.Action | None:
    # argparse lists its options only in _actions (no public accessor); read-only use
    return next((a for a in parser._actions if f"--{option}" in a.option_strings), None)


def service_options(settings: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each service's extra command-line options from `SERVICE.OPTION=VALUE` settings (a flag: `SERVICE.OPTION`);
    ValueError naming the setting when the service, the option or the value is not one the service accepts."""
    options: dict[str, list[str]] = {}
    parsers: dict[str, argparse.ArgumentParser] = {}
    for setting in settings:
        target, has_value, value = setting.partition("=")
        service, _, option = target.strip().partition(".")
        option = option.strip().removeprefix("--")
        if service not in SERVICES or not option:
            raise ValueError(f"--set {setting!r}: expected SERVICE.OPTION=VALUE with SERVICE one of {', '.join(SERVICES)}")
        if option in STACK_OPTIONS:
            raise ValueError(f"--set {setting!r}: feedserve up sets --{option} itself (see `feedserve up --help` for "
                             f"ports, --store, --schema and --plaintext)")
        parser = parsers.setdefault(service, _parser(service))
        action = _action(parser, option)
        if action is None:
            raise ValueError(f"--set {setting!r}: {service} has no option --{option} (see python -m {service} --help)")
        if action.nargs == 0:  # a flag
            if has_value and value.strip().lower() not in ("", "true", "1", "yes"):
                raise ValueError(f"--set {setting!r}: --{option} is a flag; give it without a value")
            options.setdefault(service, []).append(f"--{option}")
            continue
        if not has_value:
            raise ValueError(f"--set {setting!r}: --{option} needs a value ({service}.{option}=VALUE)")
        try:
            checked = action.type(value) if callable(action.type) else value
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--set {setting!r}: not a valid value for --{option}: {exc}") from None
        if action.choices is not None and checked not in action.choices:
            raise ValueError(f"--set {setting!r}: --{option} is one of {', '.join(map(str, action.choices))}")
        options.setdefault(service, []).extend((f"--{option}", value))
    return {service: tuple(argv) for service, argv in options.items()}


def check_service_sections(path: Path, config: dict[str, dict[str, Any]]) -> None:
    """Every service section of a configuration file checked against that service's parser, as `--set` is: a
    ConfigError naming the key for an unknown one, a bad value, or an option `feedserve up` sets itself."""
    for service in SERVICES:
        if service in config:
            apply_section(_parser(service), path, service, config[service], refused=STACK_OPTIONS)


def show_config(up: argparse.ArgumentParser, path: Path | None, up_argv: Sequence[str], settings: Sequence[str]
                ) -> dict[str, list[Setting]]:
    """The effective configuration of `feedserve up` and of each service it starts: every option, its value and
    its origin (default, file, environment, flag), given the file, up's own flags and the `--set` settings."""
    config = load_config(path) if path is not None else {}
    if path is not None:
        check_service_sections(path, config)
    flags = service_options(settings)
    shown = {"up": effective(up, "up", config.get("up", {}), path, up_argv)}
    for service in SERVICES:
        shown[service] = [s for s in effective(_parser(service), service, config.get(service, {}), path,
                                               flags.get(service, ())) if s.option not in STACK_OPTIONS]
    return shown
