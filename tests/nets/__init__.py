"""Tests of magtok.nets."""

from tests._reference import REFERENCE_DIR, load_reference  # noqa: F401
