"""The Prometheus metrics every process exposes; names are part of the operations contract."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Histogram(
    "conference_http_request_duration_seconds",
    "HTTP requests by route and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMANDS_ACCEPTED = Counter(
    "conference_commands_accepted_total", "Commands answered 202 (replays excluded)."
)
COMMANDS_CONSUMED = Counter(
    "conference_commands_consumed_total", "Commands taken from Kafka, by outcome.", ["outcome"]
)
PROVIDER_REQUESTS = Histogram(
    "conference_provider_request_duration_seconds",
    "Requests to TotalVoice by endpoint and outcome.",
    ["endpoint", "outcome"],
)
CONFERENCES_FINALIZED = Counter(
    "conference_finalized_total", "Conferences that reached a final status.", ["status"]
)
POLLS_PER_CONFERENCE = Histogram(
    "conference_polls_per_conference",
    "GET /conferencia/{id} calls a conference needed before it was final.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 20, 50),
)
OUTBOX_BACKLOG = Gauge("conference_outbox_backlog", "Events waiting in the outbox.")
WEBHOOKS_RECEIVED = Counter(
    "conference_webhooks_received_total",
    "Provider callbacks, by whether they matched.",
    ["matched"],
)
