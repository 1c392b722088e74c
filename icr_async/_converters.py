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
    if type(value) is str:
        # Fast path: Python 3.11+ reads "Z" and any fraction digits itself.
        try:
            dt = datetime.datetime.fromisoformat(value)
        except ValueError:
            dt = _parse_datetime_slow(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        return dt
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
        dt = _parse_datetime_slow(value)
    else:
        raise TypeError(f"expected an ISO-8601 date-time string, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def _parse_datetime_slow(value: str) -> datetime.datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes exactly 3 or 6 fraction digits: normalise to 6.
    text = _FRACTION_RE.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {value!r}") from None


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
    if type(value) is str:
        return value
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


def _optional(hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    # cattrs' generic Optional handling dispatches on every call; a direct None check is
    # several times cheaper and these fields are most of every model.
    def structure_optional(value: Any, cl: Any) -> Any:
        return None if value is None else hook(value, cl)

    return structure_optional


def make_converter(*, detailed: bool = False) -> cattrs.Converter:
    """Build the converter with every hook the models need, in one place.

    ``detailed=False`` is the fast converter used for every response; ``detailed=True``
    builds the same rules with cattrs' detailed validation, used only to explain a failure
    (which field, where), so the happy path does not pay for error bookkeeping.
    """
    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=detailed)

    def structure_datetime(value: Any, _: Any) -> datetime.datetime:
        return parse_datetime(value)

    conv.register_structure_hook(datetime.datetime, structure_datetime)
    conv.register_unstructure_hook(datetime.datetime, _format_datetime)
    conv.register_structure_hook(Permissions, _structure_permissions)
    conv.register_unstructure_hook(Permissions, lambda p: p.to_dict())
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(int, _structure_int)
    for scalar, hook in (
        (str, _structure_str),
        (bool, _structure_bool),
        (int, _structure_int),
        (datetime.datetime, structure_datetime),
    ):
        conv.register_structure_hook(scalar | None, _optional(hook))

    def structure_factory(cls: type[Any]) -> Callable[[Any, Any], Any]:
        fields = attrs.fields(cls)
        names = [f.name for f in fields]
        has_extra = "extra" in names
        overrides = {n: override(rename=camel(n)) for n in names if n != "extra"}
        if has_extra:
            overrides["extra"] = override(omit=True)
        base = make_dict_structure_fn(
            cls,
            conv,
            _cattrs_detailed_validation=detailed,
            **overrides,  # type: ignore[arg-type]
        )
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
_explaining_converter: cattrs.Converter | None = None


def _explain(data: Any, cls: type[Any]) -> BaseException | None:
    """Re-run a failed conversion with detailed validation to learn which field failed."""
    global _explaining_converter
    if _explaining_converter is None:
        _explaining_converter = make_converter(detailed=True)
    try:
        _explaining_converter.structure(data, cls)
    except Exception as exc:
        return exc
    return None  # pragma: no cover - both converters apply the same rules


def _field_of(exc: BaseException) -> str | None:
    for message in (
        cattrs.transform_error(exc) if isinstance(exc, cattrs.BaseValidationError) else []
    ):
        _, _, where = message.partition(" @ ")
        if where:
            return where.removeprefix("$.") if where != "$" else None
    return None


class _Slow(Exception):
    """Raised inside a fast structure function: this shape needs the full converter."""


_FAST: dict[type[Any], Callable[[Any], Any] | None] = {}
_MISSING = object()


def _fast_fn(cls: type[Any]) -> Callable[[Any], Any] | None:
    """A straight-line structure function for the common JSON shapes of ``cls``.

    Why: cattrs' generated code calls a hook per field (and one more per ``Optional``);
    for a 25-field installation that is most of the SDK's per-request CPU. This compiles
    the same attrs field definitions into one function that accepts only the plain
    shapes (a ``str`` where a ``str`` is declared, ISO text for a datetime, ...) and raises
    ``_Slow`` for anything else, which hands the value to cattrs, the reference for every
    rule. Classes with field types not listed here get no fast path.
    """
    if cls in _FAST:
        return _FAST[cls]
    _FAST[cls] = None  # recursion guard; replaced below on success
    if not attrs.has(cls):
        return None
    attrs.resolve_types(cls)
    ns: dict[str, Any] = {
        "_Slow": _Slow,
        "_M": _MISSING,
        "_dt": parse_datetime,
        "_Permissions": Permissions._from_json,
        "_cls": cls,
        "dict": dict,
        "type": type,
        "tuple": tuple,
        "list": list,
        "str": str,
        "int": int,
        "bool": bool,
        "float": float,
    }
    body = ["def fast(o):", "    if type(o) is not dict:", "        raise _Slow"]
    args: list[str] = []
    known: list[str] = []
    has_extra = False
    for i, field in enumerate(attrs.fields(cls)):
        if field.name == "extra":
            has_extra = True
            continue
        key = camel(field.name)
        known.append(key)
        typ = field.type
        optional = False
        args_of = getattr(typ, "__args__", None)
        if args_of and type(None) in args_of and len(args_of) == 2:
            optional = True
            typ = next(a for a in args_of if a is not type(None))
        var = f"v{i}"
        required = field.default is attrs.NOTHING
        if required:
            body += [
                f"    {var} = o.get({key!r}, _M)",
                f"    if {var} is _M or {var} is None:",
                "        raise _Slow",
            ]
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            ns[f"_f{i}"] = field.default.factory
            body += [
                f"    {var} = o.get({key!r}, _M)",
                f"    if {var} is _M or {var} is None:",
                f"        {var} = _f{i}()",
            ]
            optional = False
            body.append("    else:")
            indent = "        "
        else:
            ns[f"_d{i}"] = field.default
            body += [
                f"    {var} = o.get({key!r}, _M)",
                f"    if {var} is _M:",
                f"        {var} = _d{i}",
            ]
            body.append(
                f"    elif {var} is not None:" if optional or field.default is None else "    else:"
            )
            indent = "        "
        if required:
            indent = "    "
        if typ in (str, int, bool):
            check = [f"{indent}if type({var}) is not {typ.__name__}:", f"{indent}    raise _Slow"]
        elif typ is float:
            check = [
                f"{indent}if type({var}) is not float and type({var}) is not int:",
                f"{indent}    raise _Slow",
            ]
        elif typ is datetime.datetime:
            check = [
                f"{indent}if type({var}) is not str:",
                f"{indent}    raise _Slow",
                f"{indent}{var} = _dt({var})",
            ]
        elif typ is Permissions:
            check = [
                f"{indent}if type({var}) is not dict:",
                f"{indent}    raise _Slow",
                f"{indent}{var} = _Permissions({var})",
            ]
        elif getattr(typ, "__origin__", None) is tuple:
            item_type = (
                typ.__args__[0] if len(typ.__args__) == 2 and typ.__args__[1] is Ellipsis else None
            )
            if item_type is Any:
                check = [
                    f"{indent}if type({var}) is not list:",
                    f"{indent}    raise _Slow",
                    f"{indent}{var} = tuple({var})",
                ]
            elif item_type is not None and attrs.has(item_type) and _fast_fn(item_type) is not None:
                # tuple[Credit, ...]: every item through the item model's own fast path.
                ns[f"_n{i}"] = _fast_fn(item_type)
                check = [
                    f"{indent}if type({var}) is not list:",
                    f"{indent}    raise _Slow",
                    f"{indent}{var} = tuple([_n{i}(x) for x in {var}])",
                ]
            else:
                return None  # anything else is left to cattrs
        elif attrs.has(typ):
            inner = _fast_fn(typ)
            if inner is None:
                return None
            ns[f"_n{i}"] = inner
            check = [f"{indent}{var} = _n{i}({var})"]
        else:
            return None
        body += check
        args.append(f"{field.name}={var}")
    if has_extra:
        ns["_known"] = frozenset(known)
        body += [
            "    if _known.issuperset(o):",
            "        return _cls(" + ", ".join(args) + ")",
            "    return _cls("
            + ", ".join([*args, "extra={k: v for k, v in o.items() if k not in _known}"])
            + ")",
        ]
    else:
        body.append("    return _cls(" + ", ".join(args) + ")")
    try:
        exec(compile("\n".join(body), f"<icr_async fast structure {cls.__name__}>", "exec"), ns)  # noqa: S102
    except SyntaxError:  # pragma: no cover - a field name that is not an identifier
        return None
    fn: Callable[[Any], Any] = ns["fast"]
    fn.__source__ = "\n".join(body)  # type: ignore[attr-defined]  # for debugging
    _FAST[cls] = fn
    return fn


def structure(data: Any, cls: type[T], *, method: str = "", path: str = "") -> T:
    """Convert decoded JSON to ``cls`` or raise ``ResponseDecodeError`` naming the field."""
    fast = _FAST.get(cls, _MISSING)
    if fast is _MISSING:
        fast = _fast_fn(cls)
    if fast is not None:
        try:
            return fast(data)  # type: ignore[no-any-return,operator]
        except _Slow:
            pass
        except (TypeError, ValueError, KeyError, AttributeError):
            pass  # let cattrs judge and explain
    try:
        return converter.structure(data, cls)
    except (
        cattrs.BaseValidationError,
        TypeError,
        ValueError,
        KeyError,
        AttributeError,
    ) as fast_exc:
        exc = _explain(data, cls) or fast_exc
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
