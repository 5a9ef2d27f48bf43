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


# What a provider may put around the digits when it echoes a number.
_DECORATION = re.compile(r"[\s().-]")


def from_provider(raw: str) -> str | None:
    """A number in any form the provider may echo it — `4832830151`, `554832830151`,
    `+554832830151`, `048 3283-0151` — in E.164; None when it is not a Brazilian number.

    Lenient where `to_e164` is strict: this only reads what the provider says it dialed, so
    that a participant is matched to its call whatever the echo form; it never chooses what to
    dial. The forms cannot be confused: a national number has 10 or 11 digits, with the country
    code 12 or 13, with the trunk prefix 0 11 or 12 (and a DDD never starts with 0).
    """
    digits = _DECORATION.sub("", raw.strip())
    if digits.startswith("+"):
        if not digits.startswith("+55"):
            return None
        national = digits[3:]
    elif digits.startswith("55") and len(digits) in (12, 13):
        national = digits[2:]
    elif digits.startswith("0") and len(digits) in (11, 12):
        national = digits[1:]
    else:
        national = digits
    return "+55" + national if _NATIONAL.fullmatch(national) else None
