"""The metric names the Grafana dashboard (deploy/grafana/herald.json) queries, for the tests that check them."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "herald.json"
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "by",
    "without",
}


def expressions(path: Path = DASHBOARD) -> list[str]:
    """Every query of every panel."""
    dashboard = json.loads(path.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(path: Path = DASHBOARD) -> set[str]:
    """The series names the queries use, as scraped (`_bucket`, `_count`, `_total` kept): the identifiers left once
    label matchers, groupings, ranges, numbers and PromQL's own words are taken out."""
    names: set[str] = set()
    for expression in expressions(path):
        bare = re.sub(r"\{[^}]*\}", "", expression)
        bare = re.sub(r"\b(by|without)\s*\([^)]*\)", "", bare)
        bare = re.sub(r"\[[^\]]*\]", "", bare)
        names |= {word for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if word not in PROMQL_WORDS}
    return names
