"""The declared schema: presets load, attributes are checked by kind, and bad fields are named."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from catalog import Item, load_schema, preset_schema
from catalog.records import Event, check_events, check_items
from catalog.schema import PRESETS
from errors import InvalidArgument


class TestPresets:
    def test_the_simulator_and_movielens_presets_load(self) -> None:
        """Both shipped presets parse and declare item, user and context fields."""
        assert {"simulator", "movielens"} <= set(PRESETS)
        for name in ("simulator", "movielens"):
            schema = preset_schema(name)
            assert schema.of("user") and schema.of("context")

    def test_a_schema_round_trips_through_toml(self, tmp_path: Path) -> None:
        """to_toml writes what load_schema reads back."""
        schema = preset_schema("movielens")
        (tmp_path / "s.toml").write_text(schema.to_toml())
        assert load_schema(tmp_path / "s.toml") == schema

    def test_an_unknown_kind_is_refused_naming_the_field(self, tmp_path: Path) -> None:
        """A schema file with a kind feedserve does not know fails at load, naming the section and field."""
        (tmp_path / "s.toml").write_text('[item]\ncolour = "rainbow"\n')
        with pytest.raises(ValueError, match=r"\[item\] colour"):
            load_schema(tmp_path / "s.toml")


class TestAttributes:
    schema = preset_schema("movielens")

    def test_values_are_normalised_by_kind(self) -> None:
        """Numbers become floats; a categorical stays a string."""
        assert self.schema.check_attributes("user", {"age": 31, "gender": "F"}, "users[0]") == {"age": 31.0, "gender": "F"}

    @pytest.mark.parametrize("attributes, field", [
        ({"shoe_size": 42.0}, "users[3].attributes.shoe_size"),
        ({"age": "old"}, "users[3].attributes.age"),
        ({"age": math.nan}, "users[3].attributes.age"),
        ({"gender": 1.0}, "users[3].attributes.gender"),
        ({"gender": "x" * 2000}, "users[3].attributes.gender"),
    ])
    def test_bad_attributes_name_the_row_and_field(self, attributes: dict, field: str) -> None:
        """Undeclared fields, wrong types, NaN and oversized values get INVALID_ARGUMENT naming row and field."""
        with pytest.raises(InvalidArgument) as caught:
            self.schema.check_attributes("user", attributes, "users[3]")
        assert caught.value.field == field


class TestRecords:
    schema = preset_schema("simulator")

    @pytest.mark.parametrize("item, field", [
        (Item(""), "items[1].id"),
        (Item("x" * 257), "items[1].id"),
        (Item("a"), "items[1].id"),  # repeats row 0
        (Item("b", published=-1), "items[1].published"),
        (Item("b", categories=[""]), "items[1].categories[0]"),
        (Item("b", attributes={"colour": "red"}), "items[1].attributes.colour"),
    ])
    def test_a_bad_item_row_is_named(self, item: Item, field: str) -> None:
        """Empty, overlong or repeated ids, negative times, empty labels and undeclared attributes name row and field."""
        with pytest.raises(InvalidArgument) as caught:
            check_items([Item("a"), item], self.schema)
        assert caught.value.field == field

    def test_more_than_ten_thousand_rows_is_refused(self) -> None:
        """A batch is at most 10,000 rows."""
        with pytest.raises(InvalidArgument, match="at most 10000"):
            check_items([Item(str(n)) for n in range(10_001)], self.schema)

    def test_an_unknown_event_type_is_named(self) -> None:
        """An event type outside the enum names its row."""
        with pytest.raises(InvalidArgument) as caught:
            check_events([Event("u", "i", 2), Event("u", "i", 99)], frozenset({2}))
        assert caught.value.field == "events[1].event"
