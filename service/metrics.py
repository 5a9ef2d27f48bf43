"""The Prometheus metrics every process exposes; names are part of the operations contract
(deploy/k8s's alerts use them)."""

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
CONSUMER_LAG = Gauge(
    "conference_consumer_lag",
    "Commands on the topic not yet committed by the group (end offset - committed offset), "
    "by partition.",
    ["topic", "partition"],
)
CONSUMER_COMMITTED_OFFSET = Gauge(
    "conference_consumer_committed_offset",
    "The group's committed offset, by partition: flat while commands wait means it is stuck.",
    ["topic", "partition"],
)
PROVIDER_REQUESTS = Histogram(
    "conference_provider_request_duration_seconds",
    "Requests to TotalVoice by endpoint and outcome (ok, or the error's kind).",
    ["endpoint", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROVIDER_BUDGET_SHARE = Gauge(
    "conference_provider_budget_share_rps",
    "This process's share of TOTALVOICE_MAX_RPS (the budget divided by the live workers).",
)
PROVIDER_BUDGET_WAIT = Histogram(
    "conference_provider_budget_wait_seconds",
    "From booking a provider request to its send time: what the budget's queue costs.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROVIDER_BUDGET_REFUSED = Counter(
    "conference_provider_budget_refused_total",
    "Provider requests put off because this process's share could not serve them in time.",
)
PROVIDER_ACCOUNT_PAUSED = Gauge(
    "conference_provider_account_paused",
    "1 while the provider refuses our account (token, permission, balance) and the dialer waits.",
)
PROVIDER_ACCOUNT_REFUSALS = Counter(
    "conference_provider_account_refusals_total",
    "Provider answers that refused the account rather than the request, by kind.",
    ["kind"],
)
DIAL_RESOLUTIONS = Counter(
    "conference_dial_resolutions_total",
    "Dials of unknown outcome resolved from the provider's call list, by what it showed.",
    ["outcome"],
)
CONFERENCES_FINALIZED = Counter(
    "conference_finalized_total", "Conferences that reached a final status.", ["status"]
)
POLLS_PER_CONFERENCE = Histogram(
    "conference_polls_per_conference",
    "GET /conferencia/{id} calls a conference needed before it was final.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 20, 50),
)
TIME_TO_FINAL = Histogram(
    "conference_time_to_final_seconds",
    "From acceptance to a final status.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600),
)
OUTBOX_BACKLOG = Gauge("conference_outbox_backlog", "Events waiting in the outbox.")
OVERDUE_POLLS = Gauge(
    "conference_overdue_polls", "Unfinished conferences whose next step is over a minute late."
)
RECONCILE_DISCREPANCIES = Gauge(
    "conference_reconcile_discrepancies", "Discrepancies found by the latest reconcile run."
)
PRICES_REFUSED = Counter(
    "conference_prices_refused_total",
    "Provider prices the ledger cannot hold exactly (numeric(18, 6)), refused, not rounded.",
    ["source"],
)
WEBHOOKS_RECEIVED = Counter(
    "conference_webhooks_received_total",
    "Provider callbacks, by whether they matched.",
    ["matched"],
)

# Series that alerts take increase() of exist from the start, so the first event counts.
for _outcome in ("accepted", "duplicate", "dead_lettered"):
    COMMANDS_CONSUMED.labels(outcome=_outcome)
for _outcome in ("placed", "not_placed"):
    DIAL_RESOLUTIONS.labels(outcome=_outcome)
for _status in ("completed", "failed", "canceled", "unresolved"):
    CONFERENCES_FINALIZED.labels(status=_status)
