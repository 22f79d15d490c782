"""Deterministic orchestration: no I/O here, every effect is an activity."""
