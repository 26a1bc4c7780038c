"""Test doubles and helpers shared by the daemon-level tests (importable by the daemon process
too: tests/conftest.py's daemon_env puts the repo root on its PYTHONPATH)."""
