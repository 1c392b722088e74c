"""Old public names kept for one release, each with a ``DeprecationWarning`` that names its
replacement (a module-level ``__getattr__``, so importing the package warns nobody)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["deprecated_names"]


def deprecated_names(
    module: str,
    namespace: Mapping[str, Any],
    renamed: Mapping[str, str],
    moved: Mapping[str, tuple[Any, str]] | None = None,
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves each old name in ``renamed`` (old -> new name in
    this module) and in ``moved`` (old -> (the object, its new dotted home)) with a warning,
    and raises ``AttributeError`` for anything else."""

    def __getattr__(name: str) -> Any:
        new = renamed.get(name)
        if new is not None:
            value, home = namespace[new], f"{module}.{new}"
        elif moved is not None and name in moved:
            value, home = moved[name]
        else:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated and will be removed in the next release; use {home}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
