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
_new = object.__new__
# BaseModel's slots, set through their descriptors (a third cheaper than object.__setattr__)
_slots = BaseModel.__dict__
_set_dict = _slots["__dict__"].__set__
_set_fields_set = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__


def trusted(cls: type[M], values: dict[str, Any], fields_set: set[str] | None = None) -> M:
    """``cls(**values)`` without validation; ``values`` holds every field of ``cls`` in
    declaration order, each already of its field's type (the caller's contract);
    ``fields_set``: the fields passed, when the others took their defaults."""
    m = _new(cls)
    _set_dict(m, values)
    _set_fields_set(m, set(values) if fields_set is None else fields_set)
    _set_extra(m, None)
    _set_private(m, None)
    return m
