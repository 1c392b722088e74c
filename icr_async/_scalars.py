"""The readers behind the converter's scalar rules (``_converters.RULES``): what each
declared type accepts beyond the JSON shape ICR normally sends, and what it refuses.

Each takes a decoded JSON value that is *not* the plain shape and converts it or raises
``TypeError``/``ValueError`` (the converter turns either into ``ResponseDecodeError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .models import Permissions

__all__ = ["boolean", "integer", "number", "permissions", "text"]


def text(value: Any) -> str:
    """An id or other text: a string as sent, an integer as its decimal text."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))  # decimal text, also for int subclasses
    # Refused: containers (never "[...]"), booleans, and floats (str(67890.0) is not an id).
    raise TypeError(f"expected a string (or an integer id), got {type(value).__name__}")


def integer(value: Any) -> int:
    """An integer: also a whole float or decimal text; never a boolean."""
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def boolean(value: Any) -> bool:
    """A boolean: also 0/1 and the texts "true"/"false"."""
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError(f"expected a boolean, got {value!r}")


def number(value: Any) -> float:
    """A number: an int or float as sent, or numeric text; never a boolean."""
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return float(value)  # ValueError for text that is not a number
    raise TypeError(f"expected a number, got {type(value).__name__}")


def permissions(value: Any) -> Permissions:
    """Permissions from a JSON object (``None`` reads as none granted)."""
    if value is None:
        return Permissions()
    if not isinstance(value, Mapping):
        raise TypeError(f"permissions must be an object, got {type(value).__name__}")
    return Permissions(value)
