"""Every metric the alerts and the Grafana dashboard query is one the service exports: a
misspelt name is not an error in PromQL, it is an alert that never fires and an empty panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import prometheus_client
import yaml

import service.metrics  # noqa: F401  (registers the service's metrics)

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"
NAME = re.compile(r"\b(conference_[a-z_]+)")
SERIES_SUFFIXES = ("_bucket", "_count", "_sum")


def _exported() -> set[str]:
    text = prometheus_client.generate_latest().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE conference_")}


def _unknown(expressions: list[str]) -> set[str]:
    exported = _exported()
    used = {name for expr in expressions for name in NAME.findall(expr)}
    return {
        name
        for name in used
        if name not in exported
        and not any(name.endswith(s) and name.removesuffix(s) in exported for s in SERIES_SUFFIXES)
    }


def test_every_alert_queries_exported_metrics() -> None:
    documents = yaml.safe_load_all((BASE / "monitoring.yaml").read_text())
    rules = next(d for d in documents if d["kind"] == "PrometheusRule")
    expressions = [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    assert len(expressions) >= 8
    assert _unknown(expressions) == set()


def test_every_dashboard_panel_queries_exported_metrics() -> None:
    dashboard = json.loads((BASE / "dashboards" / "conference-service.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(expressions) >= 9
    assert _unknown(expressions) == set()


def test_an_unknown_name_is_caught() -> None:
    assert _unknown(["rate(conference_provider_requests_total[5m])"]) == {
        "conference_provider_requests_total"
    }
