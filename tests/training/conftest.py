"""Fixtures of the training wing's tests (the launcher, the local engine, SFT, CPU math).

The shared ones are in tests/conftest.py; the fixture data builders in _engine_helpers (here),
_tiny_helpers and _train_helpers (tests/).
"""
