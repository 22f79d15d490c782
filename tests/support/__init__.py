"""Helpers the tests share, and bench/ with them: a test imports them from here, never from a
conftest.py (which holds only fixtures and hooks) nor from another test module."""
