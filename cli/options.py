"""`feedserve up --set SERVICE.OPTION=VALUE`: any option of any service, checked against that service's own parser
before anything starts (an unknown service, option or value is an error naming it, not a child that dies later)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["SERVICES", "STACK_OPTIONS", "service_options"]

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
