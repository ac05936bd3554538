"""The data every service reads: the synthetic default world, built once and cached on disk."""

from world.synthetic import World, WorldSpec, ensure_world, load_world

__all__ = ["World", "WorldSpec", "ensure_world", "load_world"]
