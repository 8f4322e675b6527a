"""Checks of values that come from users (counts, rates, arrays about to be stored)."""

from __future__ import annotations

import math

from .errors import InputError


def check_positive(value: float | int | None, what: str, *, integer: bool = False) -> None:
    """A finite number above zero (None passes): the library's check of counts and rates."""
    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        raise InputError(f"{what} must be a positive {'whole number' if integer else 'number'}, got {value!r}")
