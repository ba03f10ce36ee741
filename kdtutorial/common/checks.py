"""Argument checks shared by the package's loaders and builders (the notebooks' parameters: course.parameters)."""
from __future__ import annotations


def check_choice(name: str, value, allowed: tuple) -> None:
    """Raise ``ValueError`` naming ``name``, the value and the allowed ones unless ``value in allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
