"""Hostile payloads for scenario 4: the generator lives in :mod:`simulator.hostile` (the simulator
serves them too)."""

from simulator.hostile import MB, OBJECT_KINDS, VALID, bodies, raw_record

__all__ = ["MB", "OBJECT_KINDS", "VALID", "bodies", "raw_record"]
