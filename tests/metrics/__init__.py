"""Tests of magtok.metrics."""

from tests._reference import REFERENCE_DIR, load_reference  # noqa: F401
