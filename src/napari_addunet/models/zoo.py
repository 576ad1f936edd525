"""Importing this module registers every architecture."""

from . import addunet  # noqa: F401
