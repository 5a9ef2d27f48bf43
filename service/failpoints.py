"""Named places where a process can be made to die on purpose, for the chaos suite.

Off unless `FAILPOINTS` names them (`after_accept,after_dial`); each named point kills the process
with `os._exit` the first time it is reached — no cleanup, no flush, as a power cut or an OOM kill
would. `name:N` dies at the Nth time instead.
"""

from __future__ import annotations

import os
import sys

# The steps of a conference from its create to its events.
STARTING = frozenset(
    {
        "after_accept",  # the command is in Postgres; its Kafka offset is not committed
        "after_create",  # the provider created the conference; its id is not stored
        "after_mark_dialing",  # participants are marked dialing; nobody has been dialed
        "dial_sent",  # a dial request is written to the provider; its answer is not read
        "after_dial",  # the provider placed the calls; their ids are not stored
        "after_settle",  # the final state and event are committed; the relay has not run
        "after_publish",  # Kafka has the events; the outbox does not know it yet
    }
)
# The same steps for a participant added to a running conference.
ADDED = frozenset(
    {
        "after_accept_participant",  # the add is in Postgres; its Kafka offset is not committed
        "after_mark_dialing_added",  # the added participant is marked dialing, not dialed
        "after_dial_added",  # the provider placed its call; the call's id is not stored
    }
)
KNOWN = STARTING | ADDED

_armed: dict[str, int] = {}
_hits: dict[str, int] = {}


def arm(spec: str | None) -> None:
    """Read a `FAILPOINTS` value; unknown names are refused so a typo cannot pass unnoticed."""
    _armed.clear()
    _hits.clear()
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        name, _, nth = item.partition(":")
        if name not in KNOWN:
            raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(sorted(KNOWN))}")
        _armed[name] = int(nth) if nth else 1


def reached(name: str) -> None:
    if name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[name]:
        print(f"failpoint {name} reached: exiting hard", file=sys.stderr, flush=True)
        os._exit(137)
