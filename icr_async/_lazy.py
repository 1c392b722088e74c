"""Nested models and dates built on first access: the fast decoding path's deferral.

An installation's organization is ~15 fields, dates and an ``extra`` dict: decoding it costs
more than the rest of the installation, and most callers never read it. Its dates are new
texts on every item of a listing (the date memo cannot help there), and parsing them was the
largest part of decoding a listed installation. So the fast path stores the raw JSON with
the request it came from, as a plain ``tuple`` ``(value, method, path)`` (no model or date
field ever holds a tuple, and building one costs less than any object): ``LazyField``, put
on the model class in place of the field's slot, decodes it the first time the attribute is
read (with the same rules, errors and ``extra`` as an eager decode) and stores the result
back. Everything that reads the attribute — the code, ``==``, ``hash``, ``repr``,
``attrs.evolve``, ``unstructure``, pickling — sees the model or the ``datetime``, never the
marker.

``slot_setters`` lets the fast path fill a model's slots (the ``LazyField``'s underlying one
included) without the keyword call to attrs' frozen ``__init__``, where that is all it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

__all__ = ["LazyField", "Pending", "default_factory", "defer_field", "slot_setters"]

Pending: TypeAlias = "tuple[Any, str, str]"
"""A value not decoded yet, ``(json_value, method, path)``: its type, ``tuple``, is the
marker (the request is kept for the error, should the value not decode)."""

Decode = Callable[[Any, type[Any], str], Any]


class LazyField:
    """A data descriptor over an attrs slot that decodes a ``pending`` value on first read:
    a ``Pending`` model or date, or (for ``Permissions``, which cannot fail) the JSON
    ``dict``."""

    __slots__ = ("decode", "name", "pending", "slot")

    def __init__(self, slot: Any, name: str, decode: Decode, pending: type[Any]) -> None:
        self.slot = slot
        self.name = name
        self.decode = decode
        self.pending = pending

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        value = self.slot.__get__(obj, owner)
        if type(value) is self.pending:
            # Decoded once; two threads racing here both store an equal model.
            value = self.decode(value, type(obj), self.name)
            self.slot.__set__(obj, value)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        # Reached through object.__setattr__ only: attrs' frozen __setattr__ refuses others.
        self.slot.__set__(obj, value)

    def __delete__(self, obj: Any) -> None:
        self.slot.__delete__(obj)


def defer_field(cls: type[Any], name: str, decode: Decode, pending: type[Any]) -> None:
    """Put a ``LazyField`` on ``cls.name`` (once; ``cls`` must be a slotted attrs class)."""
    current = cls.__dict__.get(name)
    if isinstance(current, LazyField) or current is None:
        return
    setattr(cls, name, LazyField(current, name, decode, pending))


def slot_setters(cls: type[Any]) -> dict[str, Callable[[Any, Any], None]] | None:
    """Each field's slot setter, when filling the slots is exactly what ``__init__`` does:
    a slotted attrs class whose every field is set from an argument as given (no converter,
    validator, ``init=False`` or post-init hook). ``None`` otherwise: then ``__init__`` runs.
    """
    if "__slots__" not in cls.__dict__ or any(
        hasattr(cls, hook) for hook in ("__attrs_pre_init__", "__attrs_post_init__")
    ):
        return None
    setters: dict[str, Callable[[Any, Any], None]] = {}
    for field in attrs.fields(cls):
        if (
            field.converter is not None
            or field.validator is not None
            or not field.init
            or field.metadata.get("icr_async.local")
        ):
            return None
        slot = next((k.__dict__[field.name] for k in cls.__mro__ if field.name in k.__dict__), None)
        if isinstance(slot, LazyField):
            slot = slot.slot  # the decoder stores the marker; the descriptor reads it
        if slot is None or not hasattr(slot, "__set__"):
            return None
        setters[field.name] = slot.__set__
    return setters


def default_factory(cls: type[Any], name: str) -> Callable[[], Any]:
    """What makes ``cls.name``'s default: its factory, or a function returning its value."""
    default: Any = attrs.fields_dict(cls)[name].default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory: Callable[[], Any] = default.factory
        return factory
    return lambda: default
