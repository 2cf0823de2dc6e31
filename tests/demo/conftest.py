"""Fixtures of the demo wing's tests: the bundled example and tiny model come from
tests/_tiny_helpers (shared with the training tests, which train on them too)."""
