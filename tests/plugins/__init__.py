"""Fixtures shared across test folders, loaded by tests/conftest.py."""
