"""An open-loop HTTP load generator: requests go out at a fixed rate whatever the server does,
which is what wrk2 does (wrk2 is not in Debian; wrk only runs closed loops).

Request i is *scheduled* at start + i / rate and sent on an idle keep-alive connection, or a new
one (up to --max-connections) when none is idle. Its latency is measured from its scheduled time
to the last byte of the answer, so a server that stalls is charged for the requests that queued
behind the stall (no coordinated omission). The time from sending to the answer (service time)
and how late the generator itself sent (send lag) are reported too: the generator is one Python
process competing with the server for the machine's cores, and the send lag says how much of a
latency figure is the generator's own.

Minimal on purpose: uvloop + asyncio.Protocol + httptools' response parser, no HTTP client
library, so that 1,000 requests a second cost a small fraction of a core.

    python bench/openloop.py --url http://127.0.0.1:8080/v1/conferences --rate 1000 \
        --duration 10 --warmup 2 --token bench-token --key-prefix run1
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import Counter, deque
from urllib.parse import urlsplit

import httptools
import uvloop

BODY = b'{"participants":[{"number":"4832830151"},{"number":"+5548999990000"}],"reference":"bench"}'


class Connection(asyncio.Protocol):
    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.transport: asyncio.BaseTransport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: list[float] | None = None  # [scheduled, sent]
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        request, self.current = self.current, None
        if request is not None:
            self.generator.completed(self, request, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.generator.lost(self)

    def send(self, request: list[float], payload: bytes) -> None:
        assert self.transport is not None
        self.current = request
        request[1] = time.perf_counter()
        self.transport.write(payload)  # type: ignore[attr-defined]


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.rate = args.rate
        self.duration = args.duration
        self.warmup = args.warmup
        self.max_connections = args.max_connections
        self.head = (
            f"POST {url.path or '/'} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {args.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\nIdempotency-Key: {args.key_prefix}-"
        ).encode()
        self.idle: deque[Connection] = deque()
        self.waiting: deque[tuple[list[float], bytes]] = deque()
        self.connections = 0
        self.connecting = 0
        self.opening: set[asyncio.Future[None]] = set()
        self.opened = 0
        self.outstanding = 0
        self.measure_from = 0.0
        self.latency: list[float] = []
        self.service: list[float] = []
        self.lag: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.failed = 0
        self.connect_errors = 0

    # --- connections ---------------------------------------------------------------------

    async def open(self) -> None:
        self.connecting += 1
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: Connection(self), self.host, self.port
            )
        except OSError:
            self.connect_errors += 1
            return
        finally:
            self.connecting -= 1
        self.connections += 1
        self.opened += 1
        self.release(connection)

    def release(self, connection: Connection) -> None:
        if self.waiting:
            request, payload = self.waiting.popleft()
            connection.send(request, payload)
        else:
            self.idle.append(connection)

    def lost(self, connection: Connection) -> None:
        self.connections -= 1
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.current is not None:
            self.failed += 1
            self.outstanding -= 1

    # --- requests ------------------------------------------------------------------------

    def submit(self, index: int, scheduled: float) -> None:
        self.outstanding += 1
        payload = self.head + str(index).encode() + b"\r\n\r\n" + BODY
        request = [scheduled, 0.0]
        if self.idle:
            self.idle.pop().send(request, payload)
            return
        self.waiting.append((request, payload))
        if self.connections + self.connecting < self.max_connections and self.connecting < len(
            self.waiting
        ):
            task = asyncio.ensure_future(self.open())
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)

    def completed(self, connection: Connection, request: list[float], status: int) -> None:
        now = time.perf_counter()
        self.outstanding -= 1
        scheduled, sent = request
        if scheduled >= self.measure_from:
            self.statuses[status] += 1
            self.lag.append(sent - scheduled)
            if 200 <= status < 300:  # a refusal is fast and says nothing of the work
                self.latency.append(now - scheduled)
                self.service.append(now - sent)
        self.release(connection)

    async def run(self, preopen: int) -> dict[str, object]:
        await asyncio.gather(*(self.open() for _ in range(preopen)))
        total = int(self.rate * (self.warmup + self.duration))
        start = time.perf_counter() + 0.05
        self.measure_from = start + self.warmup
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        index = 0
        while index < total:
            now = time.perf_counter()
            while index < total and start + index / self.rate <= now:
                self.submit(index, start + index / self.rate)
                index += 1
            await asyncio.sleep(max(0.0, start + index / self.rate - time.perf_counter()))
        sent_all = time.perf_counter()
        deadline = sent_all + 10.0
        while self.outstanding > 0 and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime
        measured = sum(self.statuses.values())
        return {
            "rate_requested": self.rate,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "measured_requests": measured,
            "rate_achieved": measured / self.duration,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "unanswered": self.outstanding,
            "failed": self.failed,
            "connect_errors": self.connect_errors,
            "connections_opened": self.opened,
            "latency_ms": percentiles(self.latency),  # 2xx answers only
            "service_time_ms": percentiles(self.service),
            "send_lag_ms": percentiles(self.lag),
            "generator_cpu_s": cpu,
            "generator_cpu_share": cpu / (sent_all - start),
        }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(("p50", "p90", "p99", "p999", "max"))
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": round(ordered[-1] * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop fixed-rate POST load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--preopen", type=int, default=32)
    parser.add_argument("--token", default="bench-token")
    parser.add_argument("--key-prefix", default=f"openloop-{time.time_ns()}")
    args = parser.parse_args()
    result = uvloop.run(Generator(args).run(args.preopen))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
