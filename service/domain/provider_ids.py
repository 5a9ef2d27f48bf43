"""How the provider writes its ids: numbers or strings of digits, depending on the endpoint and
the documentation's version. Read by the provider client and by the api's webhook intake alike."""

from __future__ import annotations

from decimal import Decimal


def parse_id(value: object) -> str | None:
    """A provider id as a canonical string of digits; None for anything that is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    if isinstance(value, str) and value.strip().isdigit():
        return str(int(value.strip()))
    return None
