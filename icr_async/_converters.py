"""The one private cattrs converter: camelCase JSON <-> snake_case models.

Every model the SDK reads, API answers and webhook payloads alike, goes through this module,
and every rule is written here once:

* **Scalar rules** live in :data:`RULES`, one :class:`Rule` per declared type (``str``,
  ``int``, ``bool``, ``float``, ``datetime``, ``Permissions``). ``make_converter()`` registers
  each rule as the cattrs hook for its type (and for ``type | None``), and the compiled fast
  path (:func:`_fast_fn`) inlines the same rule's *plain* branch (the JSON shape ICR normally
  sends), handing every other shape to cattrs, so the two can never disagree.
* **Ids and other text** (``str``): a string as sent; an integer as its decimal text (ICR ids
  are UUID strings, but its documentation examples use integers such as ``67890``); anything
  else, floats and booleans included, is refused: ``str(67890.0)`` is ``"67890.0"``, not the
  id the server meant, and a wrong id would go on to build request paths and cache keys.
* **Models**: keys are camelCase; unknown keys are kept in a model's ``extra`` field when it
  has one and ignored otherwise; a field marked :data:`LOCAL` (``metadata=LOCAL``) is never
  read from JSON; a missing required key raises ``ResponseDecodeError`` naming the field,
  with the cattrs error as ``__cause__``; date-times accept ``Z``, offsets and any number of
  fractional digits, and naive ones are taken as UTC.

Hooks are registered on the converter ``make_converter()`` builds, never on
``cattrs.global_converter`` (that would change the behaviour of other libraries in the same
process). There is one converter: it runs with cattrs' detailed validation, so a failure
names its field without a second pass; the plain shapes never reach it.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._dates import OneOffDatetime, format_datetime, parse_datetime, parse_datetime_once
from ._lazy import Pending, default_factory, defer_field, slot_setters
from ._scalars import boolean, integer, number, permissions, text
from .errors import ResponseDecodeError
from .models import Permissions

__all__ = [
    "LOCAL",
    "RULES",
    "DecodeFailure",
    "Rule",
    "camel",
    "converter",
    "decode",
    "make_converter",
    "parse_datetime",
    "structure",
    "unstructure",
]

T = TypeVar("T")

_CAMEL_RE = re.compile(r"_([a-z0-9])")

LAZY: Final[Mapping[str, Any]] = {"icr_async.lazy": True}
"""``attrs.field(metadata=LAZY)`` on a nested model: the fast path decodes it when first read
(an installation's organization: most callers never read it, and it costs more than the rest
of the installation). Errors in it surface then, as the same ``ResponseDecodeError``."""

LOCAL: Final[Mapping[str, Any]] = {"icr_async.local": True}
"""``attrs.field(metadata=LOCAL)``: a field the SDK fills itself, never read from JSON (a
webhook event's ``verified`` flag must not come from the payload)."""


def camel(name: str) -> str:
    """``snake_case`` -> ``camelCase``."""
    return _CAMEL_RE.sub(lambda m: m.group(1).upper(), name)


# --------------------------------------------------------------------------- the rules


@attrs.frozen
class Rule:
    """How a value declared as one type is read: the whole rule, in one place.

    A value whose type is exactly one of ``plain`` (the JSON shape ICR normally sends) becomes
    ``convert(value)``, or stays as it is when ``convert`` is ``None``; every other value goes
    to ``other``, which converts it or raises ``TypeError``/``ValueError``. The cattrs hook
    and the compiled fast path are both made from this object.
    """

    plain: tuple[type[Any], ...]
    convert: Callable[[Any], Any] | None
    other: Callable[[Any], Any]

    def hook(self) -> Callable[[Any, Any], Any]:
        """The cattrs structure hook applying this rule."""
        plain, convert, other = self.plain, self.convert, self.other
        if len(plain) == 1:
            (only,) = plain
            if convert is None:

                def one_as_is(value: Any, _: Any) -> Any:
                    return value if type(value) is only else other(value)

                return one_as_is

            def one_converted(value: Any, _: Any) -> Any:
                return convert(value) if type(value) is only else other(value)

            return one_converted

        def many(value: Any, _: Any) -> Any:
            if type(value) in plain:
                return value if convert is None else convert(value)
            return other(value)

        return many


RULES: Final[Mapping[type[Any], Rule]] = {
    str: Rule((str,), None, text),
    int: Rule((int,), None, integer),
    bool: Rule((bool,), None, boolean),
    # A JSON number stays as sent (5 stays an int: exact, and equal to 5.0).
    float: Rule((float, int), None, number),
    datetime.datetime: Rule((str,), parse_datetime, parse_datetime),
    OneOffDatetime: Rule((str,), parse_datetime_once, parse_datetime_once),
    Permissions: Rule((dict,), Permissions._from_json, permissions),
}
"""Every scalar rule: declared type -> :class:`Rule`."""


def _optional(hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    # cattrs' generic Optional handling dispatches on every call; a direct None check is
    # several times cheaper and these fields are most of every model.
    def structure_optional(value: Any, cl: Any) -> Any:
        return None if value is None else hook(value, cl)

    return structure_optional


def _json_fields(cls: type[Any]) -> tuple[list[str], bool, list[str]]:
    """``cls``'s fields read from JSON, whether it keeps ``extra``, and its local fields."""
    names: list[str] = []
    local: list[str] = []
    has_extra = False
    for field in attrs.fields(cls):
        if field.name == "extra":
            has_extra = True
        elif field.metadata.get("icr_async.local"):
            local.append(field.name)
        else:
            names.append(field.name)
    return names, has_extra, local


def make_converter() -> cattrs.Converter:
    """Build the converter with every hook the models need, in one place.

    Detailed validation is on, so a failure names its field (``$.organization.id``) at once;
    the common shapes never reach cattrs (see :func:`_fast_fn`), so they do not pay for it.
    """
    conv = cattrs.Converter(forbid_extra_keys=False, detailed_validation=True)
    for scalar, rule in RULES.items():
        hook = rule.hook()
        conv.register_structure_hook(scalar, hook)
        conv.register_structure_hook(scalar | None, _optional(hook))
    conv.register_unstructure_hook(datetime.datetime, format_datetime)
    conv.register_unstructure_hook(Permissions, lambda p: p.to_dict())

    def structure_factory(cls: type[Any]) -> Callable[[Any, Any], Any]:
        names, has_extra, local = _json_fields(cls)
        overrides = {n: override(rename=camel(n)) for n in names}
        for name in [*local, *(["extra"] if has_extra else [])]:
            overrides[name] = override(omit=True)
        base = make_dict_structure_fn(
            cls,
            conv,
            _cattrs_detailed_validation=True,
            **overrides,  # type: ignore[arg-type]
        )
        known = frozenset(camel(n) for n in names)

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
        names, has_extra, local = _json_fields(cls)
        overrides = {n: override(rename=camel(n)) for n in names}
        for name in [*local, *(["extra"] if has_extra else [])]:
            overrides[name] = override(omit=True)
        base = make_dict_unstructure_fn(cls, conv, **overrides)  # type: ignore[arg-type]
        if not has_extra:
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


# --------------------------------------------------------------------------- fast path


class _Slow(Exception):
    """Raised inside a fast structure function: this shape needs the full converter."""


_FAST: dict[type[Any], Callable[..., Any] | None] = {}
_MISSING = object()


def _fast_fn(cls: type[Any]) -> Callable[..., Any] | None:
    """A straight-line structure function for the plain JSON shapes of ``cls``.

    Why: cattrs' generated code calls a hook per field (and one more per ``Optional``);
    for a 25-field installation that is most of the SDK's per-request CPU. This compiles
    the same attrs field definitions into one function that inlines, for each field, the
    *plain* branch of its :class:`Rule` from :data:`RULES` (a ``str`` where a ``str`` is
    declared, ISO text for a datetime, ...) and raises ``_Slow`` for any other shape, which
    hands the value to cattrs and so to the same rule's ``other`` branch. Classes with field
    types that are neither in :data:`RULES`, nor attrs models, nor tuples of them get no fast
    path.
    """
    if cls in _FAST:
        return _FAST[cls]
    _FAST[cls] = None  # recursion guard; replaced below on success
    if not attrs.has(cls):
        return None
    attrs.resolve_types(cls)
    ns: dict[str, Any] = {"_Slow": _Slow, "_M": _MISSING, "_cls": cls, "tuple": tuple}
    # method and path only travel into a deferred model, for its error message.
    body = [
        "def fast(o, _method='', _path=''):",
        "    if type(o) is not dict:",
        "        raise _Slow",
    ]
    args: list[str] = []
    known: list[str] = []
    deferred: list[tuple[str, type[Any]]] = []
    deferred_raw: list[str] = []
    dates: list[str] = []
    has_extra = False
    for i, field in enumerate(attrs.fields(cls)):
        if field.name == "extra":
            has_extra = True
            continue
        if field.metadata.get("icr_async.local"):
            if field.default is attrs.NOTHING:
                return None
            continue  # never read from JSON: the default stands
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
            indent = "    "
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            ns[f"_f{i}"] = field.default.factory
            body += [
                f"    {var} = o.get({key!r}, _M)",
                f"    if {var} is _M or {var} is None:",
                f"        {var} = _f{i}()",
                "    else:",
            ]
            indent = "        "
        else:
            ns[f"_d{i}"] = field.default
            body += [
                f"    {var} = o.get({key!r}, _M)",
                f"    if {var} is _M:",
                f"        {var} = _d{i}",
                f"    elif {var} is not None:"
                if optional or field.default is None
                else "    else:",
            ]
            indent = "        "
        rule = RULES.get(typ)
        if typ is datetime.datetime:
            # ISO text kept as sent, parsed when first read (see _lazy): a listing's dates
            # are new texts on every item, and most callers never read them. Any other
            # shape (epoch numbers) is for the converter, eagerly.
            ns["_str"] = str
            dates.append(field.name)
            check = [
                f"{indent}if type({var}) is not _str:",
                f"{indent}    raise _Slow",
                f"{indent}{var} = ({var}, _method, _path)",
            ]
        elif typ is Permissions and field.metadata.get("icr_async.lazy"):
            # The JSON object itself, made a ``Permissions`` when first read (see _lazy):
            # most callers never look, and the copy is a third of an installation's decode.
            ns["_dict"] = dict
            deferred_raw.append(field.name)
            check = [f"{indent}if type({var}) is not _dict:", f"{indent}    raise _Slow"]
        elif rule is not None:
            plain = []
            for j, shape in enumerate(rule.plain):
                ns[f"_t{i}_{j}"] = shape
                plain.append(f"type({var}) is not _t{i}_{j}")
            check = [f"{indent}if {' and '.join(plain)}:", f"{indent}    raise _Slow"]
            if rule.convert is not None:
                ns[f"_c{i}"] = rule.convert
                check.append(f"{indent}{var} = _c{i}({var})")
        elif getattr(typ, "__origin__", None) is tuple:
            item_type = (
                typ.__args__[0] if len(typ.__args__) == 2 and typ.__args__[1] is Ellipsis else None
            )
            ns["_list"] = list
            if item_type is Any:
                check = [
                    f"{indent}if type({var}) is not _list:",
                    f"{indent}    raise _Slow",
                    f"{indent}{var} = tuple({var})",
                ]
            elif item_type is not None and attrs.has(item_type) and _fast_fn(item_type) is not None:
                # tuple[Credit, ...]: every item through the item model's own fast path.
                ns[f"_n{i}"] = _fast_fn(item_type)
                check = [
                    f"{indent}if type({var}) is not _list:",
                    f"{indent}    raise _Slow",
                    f"{indent}{var} = tuple([_n{i}(x) for x in {var}])",
                ]
            else:
                return None  # anything else is left to cattrs
        elif attrs.has(typ) and field.metadata.get("icr_async.lazy"):
            if _fast_fn(typ) is None:
                return None
            # Decoded when first read (see _lazy): its JSON object now.
            ns["_dict"] = dict
            deferred.append((field.name, typ))
            check = [
                f"{indent}if type({var}) is not _dict:",
                f"{indent}    raise _Slow",
                f"{indent}{var} = ({var}, _method, _path)",
            ]
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
    setters = slot_setters(cls)
    if setters is not None:
        # Fill the slots directly: attrs' frozen __init__ sets each one through
        # object.__setattr__ and is called with keywords, ~1 us of an installation's ~4.
        ns["_new"] = object.__new__
        body.append("    _o = _new(_cls)")
        for arg in args:
            name, _, var = arg.partition("=")
            ns[f"_s_{name}"] = setters[name]
            body.append(f"    _s_{name}(_o, {var})")
        if has_extra:
            ns["_known"] = frozenset(known)
            ns["_s_extra"] = setters["extra"]
            ns["_extra0"] = default_factory(cls, "extra")
            body += [
                "    if _known.issuperset(o):",
                "        _s_extra(_o, _extra0())",
                "    else:",
                "        _s_extra(_o, {k: v for k, v in o.items() if k not in _known})",
            ]
        body.append("    return _o")
    elif has_extra:
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
    fn: Callable[..., Any] = ns["fast"]
    fn.__source__ = "\n".join(body)  # type: ignore[attr-defined]  # for debugging
    for name, model in deferred:
        defer_field(cls, name, _deferred_decoder(model), tuple)
    for name in dates:
        defer_field(cls, name, _date_on_read, tuple)
    for name in deferred_raw:
        defer_field(cls, name, _permissions_on_read, dict)
    _FAST[cls] = fn
    return fn


# --------------------------------------------------------------------------- entry points


class DecodeFailure(Exception):
    """Decoded JSON that does not fit a model. ``detail`` says what is wrong and where;
    ``field`` is the dotted attribute path (``organization.id``) when one is known. The cattrs
    (or hook) error is the ``__cause__``."""

    def __init__(self, detail: str, field: str | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


_DECODE_ERRORS: Final = (
    cattrs.BaseValidationError,
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
)


def _field_of(exc: BaseException) -> str | None:
    for message in (
        cattrs.transform_error(exc) if isinstance(exc, cattrs.BaseValidationError) else []
    ):
        _, _, where = message.partition(" @ ")
        if where:
            return where.removeprefix("$.") if where != "$" else None
    return None


def _fast_or_none(data: Any, cls: type[T]) -> T | None:
    """The fast path's answer, or ``None`` when this shape is for the converter to judge."""
    fast = _fast_fn(cls)  # cached per class
    if fast is not None:
        try:
            return fast(data)  # type: ignore[no-any-return]
        except _Slow:
            pass
        except _DECODE_ERRORS:
            pass  # let cattrs judge and explain
    return None


def _convert(data: Any, cls: type[T], root: str) -> T:
    try:
        return converter.structure(data, cls)
    except _DECODE_ERRORS as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            detail = "; ".join(cattrs.transform_error(exc, path=root))
        else:
            detail = str(exc)
        raise DecodeFailure(detail, _field_of(exc)) from exc


def decode(data: Any, cls: type[T], *, root: str = "$") -> T:
    """Convert decoded JSON to ``cls`` or raise :class:`DecodeFailure`.

    The fast path first; any shape it does not take goes to the converter, the reference for
    every rule. ``root`` names the data in the failure's ``detail`` (``payload.event``).
    """
    # Always eager, through the converter: what arrives at a webhook endpoint is judged whole
    # at the door (nothing decoded later, on first access), and its volume is small.
    return _convert(data, cls, root)


def structure(data: Any, cls: type[T], *, method: str = "", path: str = "") -> T:
    """Convert decoded JSON to ``cls`` or raise ``ResponseDecodeError`` naming the field."""
    # The hot path of every API answer: the fast path inline, no call in between.
    fast = _FAST.get(cls, _MISSING)
    if fast is _MISSING:
        fast = _fast_fn(cls)
    if fast is not None:
        try:
            return fast(data, method, path)  # type: ignore[no-any-return,operator]
        except _Slow:
            pass
        except _DECODE_ERRORS:
            pass
    try:
        return _convert(data, cls, "$")
    except DecodeFailure as failure:
        raise ResponseDecodeError(
            f"could not read {cls.__name__} from the response: {failure.detail}",
            method=method,
            path=path,
            field=failure.field,
        ) from failure.__cause__


def fast_structure(cls: type[T]) -> Callable[[Any, str, str], T] | None:
    """The fast path for ``cls`` as ``fast(data, method, path)``, or ``None`` if it has none.

    For loops over many items (a listing): the caller looks it up once and calls it inline,
    and hands any item it raises on to ``structure``, which judges it (``_Slow`` means only
    "not a plain shape")."""
    return _fast_fn(cls)  # cached per class


def structure_all(items: list[Any], cls: type[T], *, method: str, path: str) -> list[T] | None:
    """Every item of a page through the fast path in one pass, or ``None`` if any needs the
    converter (then the caller structures them one by one, so a bad item is reported after
    the good ones before it). ``Page`` then pays no call per item in between. (The
    iterators decode one item at a time instead: see ``Pipeline.iterate``.)"""
    fast = _fast_fn(cls)  # cached per class
    if fast is None:
        return None
    try:
        return [fast(item, method, path) for item in items]
    except (_Slow, *_DECODE_ERRORS):
        return None


def _permissions_on_read(levels: dict[str, Any], owner: type[Any], name: str) -> Permissions:
    # Cannot fail: a level that is not text is kept as its text, as the eager decode does.
    return Permissions._from_json(levels)


def _deferred_decoder(model: type[Any]) -> Callable[[Pending, type[Any], str], Any]:
    """How a deferred ``model`` field is decoded on first read."""

    def decode_on_read(pending: Pending, owner: type[Any], name: str) -> Any:
        # A failure reads as the eager decode's would have (the owner's name, the field
        # path from the owner, the request).
        data, method, path = pending
        obj = _fast_or_none(data, model)
        if obj is not None:
            return obj
        try:
            return _convert(data, model, f"$.{name}")
        except DecodeFailure as failure:
            raise ResponseDecodeError(
                f"could not read {owner.__name__} from the response: {failure.detail}",
                method=method,
                path=path,
                field=f"{name}.{failure.field}" if failure.field else name,
            ) from failure.__cause__

    return decode_on_read


def _date_on_read(pending: Pending, owner: type[Any], name: str) -> datetime.datetime:
    """A deferred date-time, parsed on first read (through the memo, as an eager read is)."""
    text, method, path = pending
    try:
        return parse_datetime(text)
    except ValueError as exc:
        raise ResponseDecodeError(
            f"could not read {owner.__name__} from the response: {exc} @ $.{name}",
            method=method,
            path=path,
            field=name,
        ) from exc


def unstructure(obj: Any) -> Any:
    """A model back to camelCase JSON-ready data."""
    return converter.unstructure(obj)
