"""The declared schema: which typed attributes a catalog's items, users and requests carry, read from one TOML file."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from errors import InvalidArgument

__all__ = ["Schema", "KINDS", "ENTITIES", "AttributeValue", "PRESETS", "load_schema", "preset_schema"]

# categorical: one string; multi: a list of strings; numeric: a finite number; text: free text (encoded, not hashed).
KINDS = ("categorical", "multi", "numeric", "text")
ENTITIES = ("item", "user", "context")
PRESETS_DIR = Path(__file__).resolve().parent / "schemas"
PRESETS = tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.toml")))
MAX_VALUE_BYTES = 1_024
MAX_LIST = 64
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

AttributeValue = str | float | int | list[str]


@dataclass(frozen=True)
class Schema:
    """A catalog's declared fields: entity -> {field name -> kind}. Built-in item fields are not declared."""

    name: str
    fields: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entity, declared in self.fields.items():
            if entity not in ENTITIES:
                raise ValueError(f"schema {self.name}: unknown section [{entity}], expected one of {', '.join(ENTITIES)}")
            for name, kind in declared.items():
                if not _NAME.match(name):
                    raise ValueError(f"schema {self.name}: field name {name!r} must match {_NAME.pattern}")
                if kind not in KINDS:
                    raise ValueError(f"schema {self.name}: [{entity}] {name} has kind {kind!r}, expected one of {', '.join(KINDS)}")

    def of(self, entity: str) -> Mapping[str, str]:
        """The declared fields of `entity` (item, user or context), by name."""
        return self.fields.get(entity, {})

    def check_attributes(self, entity: str, attributes: Mapping[str, AttributeValue], where: str) -> dict[str, AttributeValue]:
        """The attributes, normalised (numbers as float, lists as lists); InvalidArgument naming `where.attributes.NAME`
        for a field the schema does not declare, a wrong type, NaN or an oversized value."""
        declared = self.of(entity)
        clean: dict[str, AttributeValue] = {}
        for name, value in attributes.items():
            path = f"{where}.attributes.{name}"
            kind = declared.get(name)
            if kind is None:
                known = ", ".join(sorted(declared)) or "none"
                raise InvalidArgument(path, f"not declared in schema {self.name!r} for {entity}s (declared: {known})")
            clean[name] = _check_value(kind, value, path)
        return clean

    def to_toml(self) -> str:
        lines = [f'name = "{self.name}"']
        for entity in ENTITIES:
            lines += ["", f"[{entity}]"] + [f'{name} = "{kind}"' for name, kind in self.of(entity).items()]
        return "\n".join(lines) + "\n"


def _check_value(kind: str, value: AttributeValue, path: str) -> AttributeValue:
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument(path, f"expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise InvalidArgument(path, f"expected a finite number, got {value}")
        return float(value)
    if kind == "multi":
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidArgument(path, f"expected a list of strings, got {type(value).__name__}")
        if len(values) > MAX_LIST:
            raise InvalidArgument(path, f"at most {MAX_LIST} values, got {len(values)}")
        for v in values:
            _check_string(v, path)
        return list(values)
    if not isinstance(value, str):
        raise InvalidArgument(path, f"expected a string ({kind}), got {type(value).__name__}")
    _check_string(value, path)
    return value


def _check_string(value: str, path: str) -> None:
    size = len(value.encode())
    if size > MAX_VALUE_BYTES:
        raise InvalidArgument(path, f"at most {MAX_VALUE_BYTES} bytes, got {size}")


def load_schema(path: Path) -> Schema:
    """Read a schema file; ValueError naming the file for a malformed one."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"schema {path}: {exc}") from None
    name = data.pop("name", Path(path).stem)
    if not isinstance(name, str):
        raise ValueError(f"schema {path}: name must be a string")
    for entity, declared in data.items():
        if not isinstance(declared, dict):
            raise ValueError(f"schema {path}: {entity} must be a table of `field = \"kind\"`")
    return Schema(name, {entity: dict(declared) for entity, declared in data.items()})


def preset_schema(name: str) -> Schema:
    """A schema shipped with feedserve: 'simulator' (the default) or 'movielens'."""
    if name not in PRESETS:
        raise ValueError(f"unknown schema preset {name!r}, expected one of {', '.join(PRESETS)}")
    return load_schema(PRESETS_DIR / f"{name}.toml")
