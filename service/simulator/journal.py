"""Every request the provider received: counts by endpoint and status, and the latest ones."""

from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# A status no server sends: the client gave up before the answer (nginx uses the same number).
CLIENT_GAVE_UP = 499


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: str
    endpoint: str
    status: int
    conference_id: int | None
    # The number a dial (or a create with `numero_destino`) concerns, E.164 when valid, and the
    # call it placed: tests count dials per participant from outside the service.
    number: str | None
    call_id: int | None
    body: Any
    at: datetime
    # When the request arrived and who sent it: tests use them to prove that two workers never
    # worked on one conference at the same time.
    received_at: datetime
    user_agent: str


class RequestJournal:
    def __init__(self, keep_latest: int = 10_000) -> None:
        self.status_counts: dict[str, Counter[int]] = {}
        self.gets_by_conference: Counter[str] = Counter()
        self.latest: deque[ReceivedRequest] = deque(maxlen=keep_latest)

    def record(self, request: ReceivedRequest) -> None:
        self.status_counts.setdefault(request.endpoint, Counter())[request.status] += 1
        self.latest.append(request)

    def count_conference_get(self, conference_id: str) -> None:
        self.gets_by_conference[conference_id] += 1

    def clear(self) -> None:
        self.status_counts.clear()
        self.gets_by_conference.clear()
        self.latest.clear()
