"""The generator: planned, multi-stage generation on tiers under a memory budget, streamed, with caches and routing."""
