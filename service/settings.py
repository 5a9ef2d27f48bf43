"""Every environment variable the service reads, typed and validated once at start.

Each process loads only the groups it needs, so `migrate` does not demand Kafka settings and
`api` does not demand the provider token.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line fit for an operator."""


class _Group(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)


class LogSettings(_Group):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class DatabaseSettings(_Group):
    database_url: SecretStr
    database_pool_min: int = Field(default=2, ge=1)
    # The worker's peak concurrency, counted in README ("Sizing the database pool").
    database_pool_max: int = Field(default=20, ge=1)
    # No acquire waits longer: past it, a step fails and is retried rather than outliving
    # its lease, and a request answers 503.
    database_acquire_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value


class KafkaSettings(_Group):
    kafka_bootstrap_servers: str
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_commands_topic: str = "conference.commands.v1"
    kafka_events_topic: str = "conference.events.v1"
    kafka_dlq_topic: str = "conference.commands.dlq.v1"
    kafka_consumer_group: str = "conference-worker"
    # How long a silent worker keeps its partitions before the group hands them to another.
    kafka_session_timeout_ms: int = Field(default=10_000, ge=6_000)
    # Below the callers' own HTTP timeouts: a 503 they can retry beats a hung request.
    kafka_send_timeout_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "SASL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return self

    def client_options(self) -> dict[str, Any]:
        """The connection arguments every aiokafka client takes, local brokers and real clusters
        alike (TLS with the system's CAs, SASL)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context()
        if self.kafka_security_protocol.startswith("SASL"):
            assert self.kafka_sasl_password is not None
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password.get_secret_value(),
            }
        return options


class EventsTopicSettings(_Group):
    """`reconcile` writes events to the outbox (the relay sends them): it needs only the name."""

    kafka_events_topic: str = "conference.events.v1"


class ProviderSettings(_Group):
    totalvoice_base_url: str = "https://api.totalvoice.com.br"
    totalvoice_access_token: SecretStr
    totalvoice_max_rps: float = Field(default=20.0, gt=0)
    # `urgency`: dials first, then creates, ends, polls; `fifo`: one first-come queue (the
    # baseline the benchmark compares against).
    totalvoice_budget_order: Literal["urgency", "fifo"] = "urgency"
    totalvoice_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    totalvoice_read_timeout_seconds: float = Field(default=10.0, gt=0)


class CallerSettings(_Group):
    """The callers and their tokens: the api authenticates with them, and the worker accepts
    commands only for their names (it never needs, logs or compares the tokens)."""

    api_tokens: SecretStr | None = None
    api_tokens_file: Path | None = None

    @model_validator(mode="after")
    def _tokens_present(self) -> CallerSettings:
        if not self.api_tokens and not self.api_tokens_file:
            raise ValueError("API_TOKENS or API_TOKENS_FILE must be set")
        return self

    def tokens_by_caller(self) -> dict[str, str]:
        """`name:token,name:token` from API_TOKENS, or one pair a line from API_TOKENS_FILE."""
        if self.api_tokens_file is not None:
            raw = self.api_tokens_file.read_text().replace("\n", ",")
        else:
            raw = self.api_tokens.get_secret_value() if self.api_tokens else ""
        tokens: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in raw.split(","))):
            name, sep, token = pair.partition(":")
            if not sep or not name.strip() or not token.strip():
                raise SettingsError("API_TOKENS: every entry must be name:token")
            tokens[name.strip()] = token.strip()
        if not tokens:
            raise SettingsError("API_TOKENS: no caller configured")
        return tokens

    def callers(self) -> frozenset[str]:
        return frozenset(self.tokens_by_caller())


class ApiSettings(CallerSettings):
    webhook_secret: SecretStr
    webhook_debounce_seconds: float = Field(default=1.0, ge=0)
    # At most one webhook-made poll per conference this often, however many callbacks arrive.
    webhook_nudge_interval_seconds: float = Field(default=5.0, ge=0)
    max_body_bytes: int = 64 * 1024
    # Admission, per api process (see service/entrypoints/limits.py).
    caller_rate_limit_per_second: float = Field(default=50.0, gt=0)
    caller_rate_limit_burst: int = Field(default=100, ge=1)
    # At least 10: the most participants one conference may ask for.
    caller_participants_per_minute: int = Field(default=600, ge=10)
    webhook_max_body_bytes: int = Field(default=16 * 1024, ge=1024)
    # Below DATABASE_POOL_MAX: a webhook flood must leave connections to the conference routes.
    webhook_max_concurrency: int = Field(default=4, ge=1)
    # The server's bounds (service/entrypoints/http_server.py); README, "Limits at the edge",
    # shows the memory they allow at most.
    api_max_connections: int = Field(default=1000, ge=1)
    api_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    api_max_headers: int = Field(default=100, ge=10)
    api_header_timeout_seconds: float = Field(default=10.0, gt=0)
    # A body not fully read by then is cut with 408: a slow client holds nothing for long.
    api_body_timeout_seconds: float = Field(default=10.0, gt=0)
    # Short: a provider sends its callback in one go, and a webhook slot waits on nothing else.
    webhook_body_timeout_seconds: float = Field(default=2.0, gt=0)
    # The worker's setting, read here too: an add to a conference past it is refused (409).
    default_max_duration_seconds: int = Field(default=4 * 3600, gt=0)


class WorkerSettings(_Group):
    """Timing of the dial protocol and the poll schedule (seconds), and the metrics port."""

    metrics_port: int = Field(default=9090, ge=0, le=65535)
    # CONTRACT: keys are kept at least 7 days; then a caller may use one again.
    idempotency_key_retention_days: float = Field(default=7, ge=7)
    # History that only grows otherwise (README, "Retention"). Published events: consumers read
    # them from Kafka, the rows only serve a replay after an incident. Webhooks: hints, kept
    # for correlating unknown ids. Reconcile findings: an audit trail over a year of billing.
    outbox_retention_days: float = Field(default=7, ge=1)
    webhook_retention_days: float = Field(default=30, ge=1)
    reconcile_finding_retention_days: float = Field(default=400, ge=30)
    # Rows removed per DELETE: short transactions, no long lock on the outbox the relay uses.
    prune_batch_rows: int = Field(default=1000, ge=1, le=100_000)
    poll_first_seconds: float = Field(default=5.0, gt=0)
    poll_max_seconds: float = Field(default=60.0, gt=0)
    # With the provider's webhooks registered, polls are a safety net for lost callbacks.
    webhooks_enabled: bool = False
    poll_safety_seconds: float = Field(default=120.0, gt=0)
    dial_grace_seconds: float = Field(default=15.0, gt=0)
    claim_lease_seconds: float = Field(default=60.0, gt=0)
    claim_batch: int = Field(default=50, ge=1)
    settle_deadline_seconds: float = Field(default=6 * 3600.0, gt=0)
    default_max_duration_seconds: int = Field(default=4 * 3600, gt=0)


GroupT = TypeVar("GroupT", bound=_Group)


def load(group: type[GroupT]) -> GroupT:
    """Build one settings group, turning pydantic's report into one clear line."""
    try:
        return group()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or group.__name__}: {e['msg']}"
            for e in error.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None
