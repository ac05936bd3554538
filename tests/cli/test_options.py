"""`feedserve up --set SERVICE.OPTION=VALUE`: options reach the service they name, checked against that service's
own parser before anything starts; what feedserve up sets itself cannot be overridden by accident."""

from __future__ import annotations

import pytest

from cli.options import service_options


def test_settings_become_each_services_own_command_line_options() -> None:
    """Values, flags and repeated settings land on their service's command line, in order."""
    options = service_options(["paramserver.max-travel-per-hour=3", "gateway.cache-ttl-s=0",
                               "paramserver.fsync=interval", "ranker.no-diversify"])
    assert options == {"paramserver": ("--max-travel-per-hour", "3", "--fsync", "interval"),
                       "gateway": ("--cache-ttl-s", "0"), "ranker": ("--no-diversify",)}


@pytest.mark.parametrize(("setting", "message"), [
    ("ledger.port=1", "SERVICE one of gateway, paramserver, ranker, generator"),
    ("paramserver", "SERVICE.OPTION=VALUE"),
    ("paramserver.no-such-option=1", "paramserver has no option --no-such-option"),
    ("paramserver.max-travel-per-hour=far", "not a valid value for --max-travel-per-hour"),
    ("paramserver.max-travel-per-hour", "needs a value"),
    ("paramserver.fsync=sometimes", "--fsync is one of"),
    ("ranker.no-diversify=no", "is a flag"),
    ("ranker.store=/tmp/other.db", "feedserve up sets --store itself"),
    ("gateway.port=9", "feedserve up sets --port itself"),
])
def test_a_bad_setting_is_refused_naming_it(setting: str, message: str) -> None:
    """An unknown service or option, a value the option's parser refuses, a flag given a value, and an option the
    stack sets itself are each a ValueError that quotes the setting."""
    with pytest.raises(ValueError, match=message) as raised:
        service_options([setting])
    assert repr(setting) in str(raised.value)
