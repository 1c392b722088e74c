"""Nested models built on first access: the fast decoding path's deferral.

An installation's organization is ~15 fields, dates and an ``extra`` dict: decoding it costs
more than the rest of the installation, and most callers never read it. The fast path stores
the organization's JSON object in a ``Deferred`` instead; ``LazyField``, put on the model
class in place of the field's slot, decodes it the first time the attribute is read (through
``structure``, with the same rules, errors and ``extra`` as an eager decode) and stores the
model back. Everything that reads the attribute — the code, ``==``, ``hash``, ``repr``,
``attrs.evolve``, ``unstructure``, pickling — sees the model, never the marker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Deferred", "LazyField", "defer_field"]


class Deferred:
    """A nested model's JSON object, not decoded yet, with the request it came from (for
    the error, should it not decode)."""

    __slots__ = ("cls", "data", "method", "path")

    def __init__(self, data: dict[str, Any], cls: type[Any], method: str, path: str) -> None:
        self.data = data
        self.cls = cls
        self.method = method
        self.path = path


Decode = Callable[[Deferred, type[Any], str], Any]


class LazyField:
    """A data descriptor over an attrs slot that decodes a ``Deferred`` on first read."""

    __slots__ = ("decode", "name", "slot")

    def __init__(self, slot: Any, name: str, decode: Decode) -> None:
        self.slot = slot
        self.name = name
        self.decode = decode

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        value = self.slot.__get__(obj, owner)
        if type(value) is Deferred:
            # Decoded once; two threads racing here both store an equal model.
            value = self.decode(value, type(obj), self.name)
            self.slot.__set__(obj, value)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        # Reached through object.__setattr__ only: attrs' frozen __setattr__ refuses others.
        self.slot.__set__(obj, value)

    def __delete__(self, obj: Any) -> None:
        self.slot.__delete__(obj)


def defer_field(cls: type[Any], name: str, decode: Decode) -> None:
    """Put a ``LazyField`` on ``cls.name`` (once; ``cls`` must be a slotted attrs class)."""
    current = cls.__dict__.get(name)
    if isinstance(current, LazyField) or current is None:
        return
    setattr(cls, name, LazyField(current, name, decode))
