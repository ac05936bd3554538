"""The generator: planned, multi-stage, streamed generation (contract in protos/, service to come)."""
