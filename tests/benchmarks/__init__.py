"""Benchmarks (`make bench`). A package so its conftest does not shadow tests/conftest.py."""
