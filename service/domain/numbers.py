"""Brazilian phone numbers as the service stores them: E.164 (`+55` + DDD + subscriber)."""

from __future__ import annotations

import re


class InvalidNumber(ValueError):
    """The text is not a Brazilian `DDD + number` nor an E.164 `+55…` number."""


# ASCII digits only: `\d` would take any script's digits and send them to the provider.
_NATIONAL = re.compile(r"[1-9][1-9][0-9]{8,9}")


def to_e164(raw: str) -> str:
    """`4832830151`, `48999990000` or `+5548999990000` -> `+55…`; anything else is refused.

    Only digits (after an optional leading `+55`) are accepted: silently dropping spaces or
    letters could dial a number the caller did not mean.
    """
    text = raw.strip()
    national = text[3:] if text.startswith("+55") else text
    if not _NATIONAL.fullmatch(national):
        raise InvalidNumber(
            "must be a Brazilian number: DDD + number (10 or 11 digits) or E.164 +55…"
        )
    return "+55" + national


def is_mobile(e164: str) -> bool:
    """A Brazilian mobile subscriber number has 9 digits and starts with 9."""
    subscriber = e164[5:]
    return len(subscriber) == 9 and subscriber.startswith("9")
