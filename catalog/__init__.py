"""The data plane as a library: the declared schema, the store (SQLite or PostgreSQL), the id map and the change feed."""

from catalog.feed import ChangeFollower
from catalog.records import Event, Item, StoredItem, User
from catalog.schema import Schema, load_schema, preset_schema
from catalog.store import ITEM, USER, Store, open_store

__all__ = ["Event", "Item", "StoredItem", "User", "Schema", "load_schema", "preset_schema", "Store", "open_store",
           "ITEM", "USER", "ChangeFollower"]
