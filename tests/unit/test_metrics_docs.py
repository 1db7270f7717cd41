"""docs/operations.md's metrics table names every metric Herald defines, with its type, and nothing else; the Grafana
dashboard is valid JSON and plots only documented metrics; every process has a documented metrics port.

(tests/e2e/test_metrics.py checks the dashboard against what the running processes really export.)
"""

from __future__ import annotations

import importlib
import json
import re

from prometheus_client import REGISTRY

from services.common import grpc_metrics, metrics
from services.common.config import Settings
from tests import dashboard
from tests.conftest import ROOT

# Every module that defines a Herald metric.
MODULES = (
    "services.campaign.picker",
    "services.common.nats_link",
    "services.common.natsutil",
    "services.common.outbox",
    "services.delivery.bounce_receiver",
    "services.delivery.bounce_recording",
    "services.delivery.event_webhook_sender",
    "services.delivery.pacing",
    "services.delivery.queue",
    "services.delivery.relays",
    "services.delivery.worker",
    "translator.app",
    "translator.identity",
    "translator.tracking",
    "translator.webhooks._common",
)
OPERATIONS = ROOT / "docs" / "operations.md"


def metrics_section() -> str:
    text = OPERATIONS.read_text()
    start = text.index("## Metrics\n")
    return text[start : text.index("\n## ", start + 1)]


def documented() -> dict[str, str]:
    """Metric name to documented type, from the section's tables (rows that start with a metric name)."""
    rows = re.findall(r"^\| `((?:herald|rpc)_[a-z_]+)` \| ([a-z]+)", metrics_section(), re.MULTILINE)
    return dict(rows)


def defined() -> dict[str, str]:
    """Metric name (as scraped, counters with _total) to type, of every herald_ metric the modules register."""
    for module in MODULES:
        importlib.import_module(module)
    found = {}
    for family in REGISTRY.collect():
        if family.name.startswith("herald_"):
            name = family.name + "_total" if family.type == "counter" else family.name
            found[name] = family.type
    found[grpc_metrics.SERVER_DURATION_PROMETHEUS] = "histogram"
    found[grpc_metrics.CLIENT_DURATION_PROMETHEUS] = "histogram"
    return found


def test_every_metric_herald_defines_is_documented_with_its_type_and_nothing_more() -> None:
    assert documented() == defined()


def test_the_dashboard_is_valid_json_and_plots_only_documented_metrics() -> None:
    panels = json.loads(dashboard.DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    expressions = dashboard.expressions()
    assert expressions and all(isinstance(expression, str) and expression for expression in expressions)
    series = {re.sub(r"_(bucket|count|sum)$", "", name) for name in dashboard.metric_names()}
    assert series <= set(documented()), sorted(series - set(documented()))
    # A send's story is all there: outcomes, gRPC traffic and latency, outbox lag, consumer backlog.
    for needed in (
        "herald_delivery_sent_total",
        "herald_delivery_failed_total",
        "herald_delivery_deferred_total",
        "herald_delivery_bounces_total",
        "rpc_server_duration_seconds",
        "herald_outbox_lag_seconds",
        "herald_jetstream_consumer_pending",
    ):
        assert needed in series, needed
    assert any(
        "histogram_quantile" in expression and "rpc_server_duration_seconds_bucket" in expression
        for expression in expressions
    )


def test_every_process_with_a_metrics_port_is_in_the_documented_port_table() -> None:
    section = metrics_section()
    for process, setting in metrics.PORT_SETTINGS.items():
        variable = f"HERALD_{setting.upper()}"
        default = Settings.model_fields[setting].default
        assert re.search(rf"\| {default}\b[^|]*\| `{variable}`", section), (process, variable, default)
