"""Building frozen pydantic models from values that already have the field types.

``Model(**values)`` validates every field (~1 µs per scalar field, ~6 µs for a small
model); pydantic's own ``model_construct`` is slower still (a Python loop over the fields
with alias handling). The backtest builds hundreds of thousands of features, zones, gaps
and analyst views from values it computed itself, already of the declared types (floats
as ``float``, never ``int`` or numpy scalars; enums as members), so validation would only
confirm them. :func:`trusted` sets exactly what validation would have set: ``__dict__``
with every field in declaration order, ``model_fields_set`` = the fields passed (here all
of them), no extra and no private values. The callers' tests compare the result with the
validated model (values with their types, field order, fields set).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["trusted"]

M = TypeVar("M", bound=BaseModel)
_set = object.__setattr__


def trusted(cls: type[M], values: dict[str, Any], fields_set: set[str] | None = None) -> M:
    """``cls(**values)`` without validation; ``values`` holds every field of ``cls`` in
    declaration order, each already of its field's type (the caller's contract);
    ``fields_set``: the fields passed, when the others took their defaults."""
    m = cls.__new__(cls)
    _set(m, "__dict__", values)
    _set(m, "__pydantic_fields_set__", set(values) if fields_set is None else fields_set)
    _set(m, "__pydantic_extra__", None)
    _set(m, "__pydantic_private__", None)
    return m
