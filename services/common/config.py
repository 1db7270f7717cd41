"""Settings every Herald process reads from the environment (prefix HERALD_, plus DATABASE_URL, NATS_URL, SMTP_URL)."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common import pacing_config

SERVICES = ("campaign", "tag", "audience", "delivery")

# Settings that were removed, refused rather than ignored: what to set instead.
REMOVED_SETTINGS = {
    "HERALD_DELIVERY_MAX_ATTEMPTS": "a deferred recipient is retried on HERALD_DELIVERY_RETRY_INTERVALS until "
    "HERALD_DELIVERY_MAX_DEFER_HOURS; remove HERALD_DELIVERY_MAX_ATTEMPTS",
    "HERALD_DELIVERY_RETRY_BACKOFF_SECONDS": "a deferred recipient is retried on HERALD_DELIVERY_RETRY_INTERVALS; "
    "remove HERALD_DELIVERY_RETRY_BACKOFF_SECONDS",
}


class Settings(BaseSettings):
    """One flat settings object; each process reads the fields it needs."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    database_url: str = Field(default="", validation_alias=AliasChoices("DATABASE_URL", "HERALD_DATABASE_URL"))
    nats_url: str = Field(default="", validation_alias=AliasChoices("NATS_URL", "HERALD_NATS_URL"))
    # One relay URL or several (commas or whitespace between them), each with optional name=, weight=, rate=
    # (services/delivery/relays.py; docs/operations.md, "Several relays"). Checked at start by every process.
    smtp_url: str = Field(default="", validation_alias=AliasChoices("SMTP_URL", "HERALD_SMTP_URL"))

    data_dir: Path = Path("var")
    bind: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str = ""
    campaign_grpc_port: int = 50051
    tag_grpc_port: int = 50052
    audience_grpc_port: int = 50053
    delivery_grpc_port: int = 50054
    # Prometheus metrics (docs/operations.md, "Metrics"): each process serves GET /metrics on a port of
    # its own (0: none); the translator serves it on http_port. Gauges that need a query (outbox, JetStream
    # consumers, queue rows) are sampled every metrics_sample_seconds.
    campaign_metrics_port: int = Field(default=9101, ge=0, le=65535)
    tag_metrics_port: int = Field(default=9102, ge=0, le=65535)
    audience_metrics_port: int = Field(default=9103, ge=0, le=65535)
    delivery_metrics_port: int = Field(default=9104, ge=0, le=65535)
    metrics_sample_seconds: float = Field(default=15.0, gt=0)
    # Health (docs/operations.md, "Health checks"): every health_probe_seconds a background probe checks the
    # process's PostgreSQL (SELECT 1) and NATS (connection state and a JetStream account-info request), each
    # with a timeout of health_probe_timeout_seconds; readiness and gRPC health follow what it finds.
    health_probe_seconds: float = Field(default=3.0, gt=0)
    health_probe_timeout_seconds: float = Field(default=2.0, gt=0)
    # A background loop that keeps failing (PostgreSQL or NATS away) logs its first failure, then at most one
    # "still failing" line per this many seconds with a count, and one line when it recovers.
    log_repeat_seconds: float = Field(default=60.0, gt=0)
    # WatchCampaign sends a heartbeat (the last state again, heartbeat = true) after this long without a
    # change, so a client or proxy can tell a quiet campaign from a dead stream.
    watch_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Where other processes reach each service; defaults to 127.0.0.1:<port> (one machine).
    campaign_addr: str = ""
    tag_addr: str = ""
    audience_addr: str = ""
    delivery_addr: str = ""
    # How Herald's gRPC clients call (services/common/grpc_config.py, docs/clients.md): the default deadline of
    # a unary read (Get*, List*, BatchGet*, Count*, Check*: retried after UNAVAILABLE, up to grpc_retry_attempts
    # attempts in all) and of a unary write (never retried); a call's own deadline, or the deadline of the call a
    # service is serving, wins. Streaming calls get no default deadline. Clients ping their connections every
    # grpc_keepalive_seconds; servers accept pings down to half that, so one setting never makes them GOAWAY.
    grpc_read_timeout_seconds: float = Field(default=10.0, gt=0)
    grpc_write_timeout_seconds: float = Field(default=30.0, gt=0)
    grpc_retry_attempts: int = Field(default=3, ge=1, le=5)
    grpc_keepalive_seconds: float = Field(default=30.0, ge=1)
    # TLS on every gRPC server and client (off unless a certificate or a CA file is set). Servers serve this
    # certificate and key (PEM files); clients trust the CA file's certificates (the system's when unset) and
    # present the certificate when a server asks. grpc_tls_client_auth: servers require a client certificate
    # signed by the CA file (mutual TLS).
    grpc_tls_cert_file: str = ""
    grpc_tls_key_file: str = ""
    grpc_tls_ca_file: str = ""
    grpc_tls_client_auth: bool = False
    # Port of the embedded nats-server started when NATS_URL is unset; not 4222, which a
    # system NATS often holds.
    embedded_nats_port: int = 14222
    # Prefix of every NATS subject and stream name, so several Herald installs (or test
    # runs) can share one NATS.
    nats_namespace: str = "herald"
    # Replicas of every JetStream stream and durable consumer Herald creates: 1 on one server, 3 on a
    # three-server JetStream cluster; 1 to 5 (more is refused at start-up: JetStream allows at most 5).
    nats_replicas: int = Field(default=1, ge=1, le=5)
    # Lets server-side fetches of user-given URLs (tag archive templates, import sources) reach
    # loopback, private, link-local and other non-public addresses (off: users must not reach internal hosts).
    allow_private_urls: bool = False
    # The local capture SMTP server (`herald serve mail-capture`) that `herald run` starts when
    # SMTP_URL is unset; the translator shows what it received at /mail only when mail_capture is on.
    smtp_capture_port: int = 2525
    mail_capture: bool = False
    # Bounces and complaints (docs/bounces.md): the domain of every message's return path
    # (b-<signed token>@<bounce domain>; default the public URL's host), and the port of the bounce
    # receiver (`herald serve bounce-receiver`, an SMTP server for that domain) on `bind`.
    bounce_domain: str = ""
    bounce_receiver_port: int = 2526
    # An address the bounce receiver also accepts mail for, besides the return paths: where mailbox
    # providers' feedback loops send their ARF abuse reports ('' accepts return paths only). Only ARF
    # reports count there; the complained-about recipient is the one the included original names.
    bounce_feedback_address: str = ""
    # Prometheus metrics of the bounce receiver on this port (0: off).
    bounce_receiver_metrics_port: int = Field(default=9105, ge=0, le=65535)
    # The relay SMTP_URL names, when it is a provider whose webhooks report bounces (docs/bounces.md):
    # sendgrid and postmark get the return-path token in their metadata headers too, so that their events
    # carry it back; ses and none need nothing more than the return path and X-Herald-Token.
    relay_provider: Literal["none", "ses", "sendgrid", "postmark"] = "none"
    # Soft bounces on this many consecutive campaigns make an address Hard.
    soft_bounce_limit: int = 3
    # Provider webhooks on the translator (docs/bounces.md, "Provider webhooks"). A provider whose key
    # or secret is unset (SES: not enabled) answers 404. SES through SNS: the topics whose messages are
    # accepted (comma-separated ARNs; empty: any topic), the authority (host[:port], matched whole and
    # case-insensitively) that signing certificates and subscription URLs must be fetched from over
    # HTTPS, and a PEM file of the certificate authorities trusted for those fetches instead of the
    # system's. SendGrid: the Event Webhook's verification key (base64 DER, as SendGrid shows it) and
    # how old a signed timestamp may be. Postmark: the shared secret of its webhook URL.
    ses_webhook_enabled: bool = False
    ses_topic_arns: str = ""
    sns_cert_host_pattern: str = r"sns\.[a-z]{2}(-[a-z]+)+-[0-9]+\.amazonaws\.com(\.cn)?"
    sns_ca_file: str = ""
    sendgrid_webhook_public_key: str = ""
    sendgrid_webhook_max_age_seconds: int = Field(default=600, ge=1)
    postmark_webhook_secret: str = ""
    # Bodies larger than this are refused (413) by every webhook.
    webhook_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The delivery pipeline (services/delivery): how many worker processes `herald run` starts, the
    # recipients per batch, SMTP sessions per worker (its send concurrency), batches a worker works
    # on at once.
    delivery_workers: int = 2
    delivery_batch_size: int = 200
    delivery_concurrency: int = 50
    delivery_parallel_batches: int = 2
    # Delivery workers lower their own CPU priority by this much (os.nice) when they start: sending is bulk work,
    # and on a machine it shares, the API's calls (campaign.get while a campaign sends) go first. 0: unchanged.
    delivery_worker_nice: int = Field(default=10, ge=0, le=19)
    # Recipients queued per transaction (services/delivery/queue.py): each chunk commits with its batch messages, so
    # workers send the first chunk while the rest of a large audience is still being queued.
    delivery_queue_chunk: int = Field(default=20_000, ge=100, le=1_000_000)
    # Deferred mail (services/delivery/retries.py): a recipient answered with a temporary failure is
    # retried after each of these delays in turn (seconds, comma-separated), then after delays that
    # double from the first "later" one up to the second; each delay is moved by up to ±jitter of
    # itself. Still deferred after max_defer_hours since the first deferral: Failed (a soft bounce).
    delivery_retry_intervals: str = "60,300,900,1800"
    delivery_retry_later_min_seconds: float = Field(default=3600.0, gt=0)
    delivery_retry_later_max_seconds: float = Field(default=14400.0, gt=0)
    delivery_retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    delivery_max_defer_hours: float = Field(default=48.0, gt=0)
    # The delivery service looks this often for Deferred recipients whose retry is overdue by more
    # than the second setting (a retry message lost with a JetStream stream) and schedules them again.
    delivery_retry_sweep_seconds: float = Field(default=60.0, gt=0)
    delivery_retry_overdue_seconds: float = Field(default=300.0, gt=0)
    # Recipients of one domain in one batch answered with the same 4.7.x code (or one 421) before the
    # rest of that domain's recipients in the batch are deferred without being tried.
    delivery_domain_defer_after: int = Field(default=3, ge=1)
    # Pacing (services/delivery/pacing.py, docs/operations.md "Pacing"): messages per second for the whole
    # fleet of workers together, overall and per campaign (0: unlimited), and per recipient domain or group
    # of domains ("gmail.com+googlemail.com=100, yahoo.com=20"). Replies that mean "slow down" halve a
    # domain's rate, down to pacing_min_rate; it grows back by a tenth of its ceiling after each
    # pacing_recovery_seconds with deliveries and no slow-down. Warm-up: a daily volume per sending (From)
    # domain ("news.example.com:2026-12-01:500*1.5", or daily caps "...:500/1000/2000").
    delivery_rate_per_second: float = Field(default=0.0, ge=0)
    delivery_campaign_rate_per_second: float = Field(default=0.0, ge=0)
    delivery_domain_rates: str = ""
    delivery_pacing_min_rate: float = Field(default=1.0, gt=0)
    delivery_pacing_recovery_seconds: float = Field(default=10.0, gt=0)
    delivery_warmup: str = ""
    # A batch whose worker sent no sign of life for this long is handed to another worker.
    delivery_ack_wait_seconds: float = 60.0
    # Seconds an SMTP command may take before the connection counts as failed.
    delivery_smtp_timeout_seconds: float = 30.0
    # Several relays (docs/operations.md, "Several relays"): From domains sent through a named relay of SMTP_URL
    # ("news.example.com=relay-a, example.org=relay-b"; a name SMTP_URL lacks stops every process at start),
    # and how often a relay marked down is checked (connect, EHLO, QUIT) until it is back.
    smtp_routes: str = ""
    smtp_health_check_seconds: float = Field(default=5.0, gt=0)
    # Prometheus metrics of a delivery worker on this port (0: off); several workers on one
    # machine take consecutive ports from here (`herald run`: 9110, 9111, ...).
    delivery_worker_metrics_port: int = Field(default=9110, ge=0, le=65535)
    # An address for the mailto: form of List-Unsubscribe ('' leaves only the one-click URL).
    delivery_unsubscribe_mailto: str = ""
    # Event webhooks (outgoing; docs/webhooks.md), sent by the delivery service. An event that fails is tried
    # again after the first delay, doubling per failure up to the longest; an endpoint whose every attempt
    # failed for the horizon is disabled. Plain http endpoints are refused unless allowed (https only by
    # default); private and loopback addresses follow HERALD_ALLOW_PRIVATE_URLS. Each POST may take the
    # timeout; the dispatcher looks for due events this often, and makes up to `concurrency` POSTs at once.
    event_webhook_retry_first_seconds: float = Field(default=30.0, gt=0)
    event_webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    event_webhook_retry_horizon_seconds: float = Field(default=86400.0, gt=0)
    event_webhooks_allow_http: bool = False
    event_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    event_webhook_poll_seconds: float = Field(default=1.0, gt=0)
    event_webhook_concurrency: int = Field(default=32, ge=1)

    token_secret: str = ""
    token_ttl_seconds: int = 300
    session_ttl_seconds: int = 3600
    # Failed user.login / admin.login attempts allowed per username and per client address within
    # the window; beyond that a login answers the legacy 429 until the oldest failure is out of it.
    login_failures_per_username: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_window_seconds: float = Field(default=300.0, gt=0)
    # Proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For names the client:
    # the translator's per-address limits count the address they report, not the proxy's own.
    trusted_proxies: str = ""
    db_pool_size: int = 10
    # Tests only: the campaign service's clock runs ahead of the system's by the seconds written in
    # <data_dir>/test-clock-offset (services/campaign/clock.py), so a test sees days pass at once.
    test_clock: bool = False
    log_level: str = "INFO"
    log_format: str = "json"

    @model_validator(mode="after")
    def _no_removed_settings(self) -> Settings:
        for name, instead in REMOVED_SETTINGS.items():
            if name in os.environ:
                raise ValueError(f"{name} is no longer a setting: {instead}")
        return self

    @model_validator(mode="after")
    def _grpc_tls_files(self) -> Settings:
        if bool(self.grpc_tls_cert_file) != bool(self.grpc_tls_key_file):
            raise ValueError(
                "HERALD_GRPC_TLS_CERT_FILE and HERALD_GRPC_TLS_KEY_FILE are set together or not at all"
            )
        if self.grpc_tls_client_auth and not (self.grpc_tls_ca_file and self.grpc_tls_cert_file):
            raise ValueError(
                "HERALD_GRPC_TLS_CLIENT_AUTH needs HERALD_GRPC_TLS_CA_FILE (to check client certificates) and "
                "HERALD_GRPC_TLS_CERT_FILE/_KEY_FILE (for Herald's own clients to present)"
            )
        return self

    def grpc_tls(self) -> bool:
        """Whether gRPC servers and clients use TLS: a certificate or a CA file is set."""
        return bool(self.grpc_tls_cert_file or self.grpc_tls_ca_file)

    @field_validator("delivery_retry_intervals")
    @classmethod
    def _retry_intervals(cls, value: str) -> str:
        try:
            delays = [float(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError("HERALD_DELIVERY_RETRY_INTERVALS is a comma-separated list of seconds") from None
        if any(delay <= 0 for delay in delays):
            raise ValueError("HERALD_DELIVERY_RETRY_INTERVALS: every delay must be more than 0 seconds")
        return value

    @field_validator("delivery_domain_rates")
    @classmethod
    def _domain_rates(cls, value: str) -> str:
        pacing_config.parse_domain_rates(value)
        return value

    @field_validator("delivery_warmup")
    @classmethod
    def _warmup(cls, value: str) -> str:
        pacing_config.parse_warmup(value)
        return value

    def delivery_retry_delays(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.delivery_retry_intervals.split(",") if part.strip())

    @field_validator("smtp_url")
    @classmethod
    def _relays(cls, value: str) -> str:
        if value.strip():
            from services.delivery.relays import parse_relays

            parse_relays(value)
        return value

    @field_validator("smtp_routes")
    @classmethod
    def _routes(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            return value
        from services.delivery.relays import parse_relays, parse_routes

        smtp_url = str(info.data.get("smtp_url") or "")
        if not smtp_url.strip():
            raise ValueError("routes From domains to relays of SMTP_URL, which is unset")
        parse_routes(value, parse_relays(smtp_url))
        return value

    @field_validator("relay_provider", mode="before")
    @classmethod
    def _provider_name(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("bounce_feedback_address")
    @classmethod
    def _feedback_address(cls, value: str) -> str:
        address = value.strip()
        local, at, domain = address.rpartition("@")
        if address and (not at or not local or not domain or any(c.isspace() or c in "<>" for c in address)):
            raise ValueError("must be one plain address such as fbl@bounces.example.com")
        return address

    def grpc_port(self, service: str) -> int:
        port: int = getattr(self, f"{service}_grpc_port")
        return port

    def grpc_addr(self, service: str) -> str:
        addr: str = getattr(self, f"{service}_addr")
        return addr or f"127.0.0.1:{self.grpc_port(service)}"

    def effective_public_url(self) -> str:
        return (self.public_url or f"http://127.0.0.1:{self.http_port}").rstrip("/")

    def sqlalchemy_url(self) -> str:
        """DATABASE_URL in the form SQLAlchemy's psycopg 3 driver expects."""
        url = self.database_url
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        raise ValueError("DATABASE_URL must be a postgresql:// URL")

    def effective_bounce_domain(self) -> str:
        from services.common.return_path import bounce_domain

        return bounce_domain(self.bounce_domain, self.effective_public_url())

    def effective_token_secret(self) -> str:
        """HERALD_TOKEN_SECRET, or one kept in the data folder so every process on this machine shares it."""
        return self.token_secret or secret_in(self.data_dir / "token-secret")


def secret_in(path: Path) -> str:
    """The random secret kept in `path`, generated on first use; only the file's owner may read it (mode 0600)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        # Created 0600 (never readable by others, not even for a moment), then linked into place whole.
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            # Two processes starting at once: the first file in place wins, both read the same secret.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
