"""The one private cattrs converter: camelCase JSON <-> snake_case models.

Every hook is registered here, in ``make_converter()``, and never on
``cattrs.global_converter`` (that would change the behaviour of other libraries in the same
process). Rules: unknown keys are kept in a model's ``extra`` field when it has one and
ignored otherwise; a missing required key raises ``ResponseDecodeError`` naming the field,
with the cattrs error as ``__cause__``; date-times accept ``Z``, offsets and any number of
fractional digits, and naive ones are taken as UTC.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import ResponseDecodeError
from .models import Permissions

__all__ = ["camel", "converter", "make_converter", "structure"]

T = TypeVar("T")

_CAMEL_RE = re.compile(r"_([a-z0-9])")
_FRACTION_RE = re.compile(r"\.(\d+)")


def camel(name: str) -> str:
    """``snake_case`` -> ``camelCase``."""
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


def parse_datetime(value: Any) -> datetime.datetime:
    """An aware ``datetime`` from ISO-8601 text (``Z``, offsets, 0-9 fraction digits) or epoch."""
    if isinstance(value, datetime.datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        # Epoch milliseconds appear in some JS-built APIs; seconds are below ~1e11 until 5138.
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
        except (OverflowError, OSError) as exc:  # NaN is a ValueError already
            raise ValueError(f"epoch time out of range: {value!r}") from exc
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        # Python 3.10's fromisoformat takes exactly 3 or 6 fraction digits: normalise to 6.
        text = _FRACTION_RE.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
        try:
            dt = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO-8601 date-time: {value!r}") from None
    else:
        raise TypeError(f"expected an ISO-8601 date-time string, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def _format_datetime(dt: datetime.datetime) -> str:
    text = dt.astimezone(datetime.timezone.utc).isoformat()
    return text.replace("+00:00", "Z")


def _structure_permissions(value: Any, _: Any) -> Permissions:
    if value is None:
        return Permissions()
    if not isinstance(value, Mapping):
        raise TypeError(f"permissions must be an object, got {type(value).__name__}")
    return Permissions(value)


def _structure_str(value: Any, _: Any) -> str:
    # ICR ids are UUID strings, but documentation examples use numbers (67890): accept both,
    # and refuse containers instead of turning them into "[...]".
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _structure_bool(value: Any, _: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError(f"expected a boolean, got {value!r}")


def _structure_int(value: Any, _: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def make_converter() -> cattrs.Converter:
    """Build the converter with every hook the models need, in one place."""
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(datetime.datetime, lambda v, _: parse_datetime(v))
    conv.register_unstructure_hook(datetime.datetime, _format_datetime)
    conv.register_structure_hook(Permissions, _structure_permissions)
    conv.register_unstructure_hook(Permissions, lambda p: p.to_dict())
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(int, _structure_int)

    def structure_factory(cls: type[Any]) -> Callable[[Any, Any], Any]:
        fields = attrs.fields(cls)
        names = [f.name for f in fields]
        has_extra = "extra" in names
        overrides = {n: override(rename=camel(n)) for n in names if n != "extra"}
        if has_extra:
            overrides["extra"] = override(omit=True)
        base = make_dict_structure_fn(cls, conv, **overrides)  # type: ignore[arg-type]
        known = frozenset(camel(n) for n in names if n != "extra")

        def structure_fn(value: Any, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"expected a JSON object for {cls.__name__}, got {type(value).__name__}"
                )
            obj = base(value, cls)
            if has_extra:
                unknown = {k: v for k, v in value.items() if k not in known}
                if unknown:
                    # Frozen attrs classes allow this one assignment before anyone sees the object.
                    object.__setattr__(obj, "extra", unknown)
            return obj

        return structure_fn

    def unstructure_factory(cls: type[Any]) -> Callable[[Any], Any]:
        names = [f.name for f in attrs.fields(cls)]
        overrides = {n: override(rename=camel(n)) for n in names if n != "extra"}
        if "extra" in names:
            overrides["extra"] = override(omit=True)
        base = make_dict_unstructure_fn(cls, conv, **overrides)  # type: ignore[arg-type]
        if "extra" not in names:
            return base

        def unstructure_fn(obj: Any) -> Any:
            out = dict(obj.extra)
            out.update(base(obj))
            return out

        return unstructure_fn

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


converter = make_converter()


def _field_of(exc: BaseException) -> str | None:
    for message in (
        cattrs.transform_error(exc) if isinstance(exc, cattrs.BaseValidationError) else []
    ):
        _, _, where = message.partition(" @ ")
        if where:
            return where.removeprefix("$.") if where != "$" else None
    return None


def structure(data: Any, cls: type[T], *, method: str = "", path: str = "") -> T:
    """Convert decoded JSON to ``cls`` or raise ``ResponseDecodeError`` naming the field."""
    try:
        return converter.structure(data, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        field = _field_of(exc)
        detail = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise ResponseDecodeError(
            f"could not read {cls.__name__} from the response: {detail}",
            method=method,
            path=path,
            field=field,
        ) from exc


def unstructure(obj: Any) -> Any:
    """A model back to camelCase JSON-ready data."""
    return converter.unstructure(obj)
