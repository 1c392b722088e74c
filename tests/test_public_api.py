"""The curated public surface: a sorted ``__all__``, documented, defined elsewhere, nothing private."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from types import ModuleType

import pytest

import icr_async


def _isort_key(name: str) -> tuple[int, list[tuple[int, int | str]]]:
    """The order ruff's RUF022 ("isort-style") keeps: CONSTANTS, then Classes, then the rest;
    within each group a natural, case-sensitive sort (digits compared as numbers)."""
    if name.isupper() and len(name) > 1:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural = [
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part
    ]
    return group, natural


def _public_modules() -> list[ModuleType]:
    modules: list[ModuleType] = [icr_async]
    for info in pkgutil.walk_packages(icr_async.__path__, "icr_async."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]):
            continue
        modules.append(importlib.import_module(info.name))
    return modules


PUBLIC_MODULES = _public_modules()


def test_sort_key_matches_ruff_examples() -> None:
    # Ruff's own RUF022 fix on this list gives exactly this order (checked with ruff 0.17).
    names = [
        "__version__",
        "b",
        "Zeta",
        "API",
        "Alpha",
        "APIError",
        "PRODUCTION_URL",
        "a10",
        "a9",
        "_x",
    ]
    assert sorted(names, key=_isort_key) == [
        "API",
        "PRODUCTION_URL",
        "APIError",
        "Alpha",
        "Zeta",
        "__version__",
        "_x",
        "a9",
        "a10",
        "b",
    ]


def test_all_is_sorted() -> None:
    assert icr_async.__all__ == sorted(icr_async.__all__, key=_isort_key)


def test_all_has_no_duplicates() -> None:
    assert len(set(icr_async.__all__)) == len(icr_async.__all__)


@pytest.mark.parametrize("name", icr_async.__all__)
def test_every_name_exists_and_is_documented(name: str) -> None:
    obj = getattr(icr_async, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        doc = inspect.getdoc(obj)
        assert doc
        assert doc.strip()
        # A class must have its own docstring, not one inherited from a base.
        if inspect.isclass(obj):
            assert obj.__doc__


@pytest.mark.parametrize("name", icr_async.__all__)
def test_nothing_is_defined_in_init(name: str) -> None:
    obj = getattr(icr_async, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert obj.__module__ != "icr_async"
        assert obj.__module__.startswith("icr_async.")


def test_init_defines_no_classes_or_functions() -> None:
    for name, obj in vars(icr_async).items():
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ != "icr_async", name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from icr_async import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(icr_async.__all__)


def test_version() -> None:
    assert isinstance(icr_async.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", icr_async.__version__)


def test_the_test_clock_lives_beside_the_emulator() -> None:
    from icr_async.testing import ManualClock

    assert "ManualClock" not in icr_async.__all__
    with pytest.warns(DeprecationWarning, match=r"icr_async\.testing\.ManualClock"):
        assert icr_async.ManualClock is ManualClock  # the old home, for one release


def test_key_names_are_exported() -> None:
    for name in (
        "AsyncICRClient",
        "ICRError",
        "APIError",
        "RateLimitedError",
        "Installation",
        "Token",
        "PrivateKey",
        "RetryPolicy",
        "Timeouts",
        "TokenCache",
        # ICR's documented objects (shared/docs/icr-api.md).
        "Credit",
        "CreditType",
        "CreditRequest",
        "ProjectRef",
        "Reservation",
        "Reserver",
        "Retirement",
        "WarehouseCredit",
        "WarehouseInventory",
    ):
        assert name in icr_async.__all__


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_modules_export_no_private_names(module: ModuleType) -> None:
    exported: list[str] = list(getattr(module, "__all__", []))
    for name in exported:
        # Dunders such as __version__ are conventional, not private.
        is_dunder = name.startswith("__") and name.endswith("__")
        assert is_dunder or not name.startswith("_"), f"{module.__name__}.__all__ has {name}"
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
