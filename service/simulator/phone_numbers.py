"""Phone numbers as the provider accepts them: `DDD + número` or E.164, always echoed in E.164."""

import re

from service.simulator.scenario import LineType

# 10 digits is a landline (DDD + 8), 11 digits a mobile (DDD + 9 + 8); no trunk zero.
_BRAZILIAN_NATIONAL = re.compile(r"[1-9][0-9](?:[0-9]{8}|9[0-9]{8})")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")


def to_e164(raw: object) -> str | None:
    """The number in E.164, or None when the provider would call it invalid."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        return None
    if raw.startswith("+55"):
        return raw if _BRAZILIAN_NATIONAL.fullmatch(raw[3:]) else None
    if raw.startswith("+"):
        return raw if _E164.fullmatch(raw) else None
    return f"+55{raw}" if _BRAZILIAN_NATIONAL.fullmatch(raw) else None


def line_type(e164: str) -> LineType:
    subscriber = e164[5:] if e164.startswith("+55") else ""
    return "movel" if len(subscriber) == 9 and subscriber.startswith("9") else "fixo"
