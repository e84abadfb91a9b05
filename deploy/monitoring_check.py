"""The checks `make k8s-check` runs on custom resources and on the monitoring component.

- Custom resources (KEDA's ScaledObject and TriggerAuthentication, the Prometheus Operator's
  PodMonitor and PrometheusRule) are validated against the CRDs vendored in deploy/crds/ (copied
  unchanged from the upstream release named atop each file), turned into a strict JSON Schema:
  unknown fields fail, as the API server's strict field validation would refuse them. A custom
  resource whose CRD is not there fails too: add the CRD of the version the cluster runs.
- Every PromQL expression, in a PrometheusRule's rules and in a Grafana dashboard (a ConfigMap
  labelled grafana_dashboard), is parsed by promql-parser (the Rust parser of GreptimeDB, which
  checks functions and argument types too), and every metric it selects must be one the
  services export (their Metrics registries plus the process collectors, exactly as main.py
  builds them) or a series recorded by a rule of the same overlay. An `le` matcher on a
  `_bucket` series must name a bucket bound the services use.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

CRDS = Path(__file__).resolve().parent / "crds"
DASHBOARD_LABEL = "grafana_dashboard"
# Grafana's variables, replaced before parsing: the built-in intervals by a duration, any other
# ($namespace, ${datasource}) by a plain word, which is valid wherever Grafana allows them.
GRAFANA_INTERVAL = re.compile(
    r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}"
)
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),)?\s*(\w+)\s*\)\s*$", re.DOTALL)
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def exported_metrics() -> tuple[set[str], set[str]]:
    """The names of every series both services' /metrics can show, and the `le` values of their
    histograms' buckets. Built as each main.py builds its registry."""
    from accounts_service import metrics as accounts_metrics
    from grpc_telemetry import server as rpc_metrics
    from grpc_telemetry.endpoint import add_process_collectors
    from imaging_service import metrics as imaging_metrics

    names: set[str] = set()
    for module in (accounts_metrics, imaging_metrics):
        registry: CollectorRegistry = module.Metrics().registry
        add_process_collectors(registry)
        for family in registry.collect():
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    bounds = {"+Inf"}
    for module in (accounts_metrics, imaging_metrics, rpc_metrics):
        for name, value in vars(module).items():
            if name.endswith("_BUCKETS"):
                # As the exposition writes le (untyped upstream).
                bounds |= {floatToGoString(bound) for bound in value}  # type: ignore[no-untyped-call]
    return names, bounds


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's openAPIV3Schema as a JSON Schema that refuses unknown fields (where the CRD does
    not keep them with x-kubernetes-preserve-unknown-fields) and accepts null where nullable."""
    out = copy.deepcopy(schema)

    # Only schema nodes are visited: "properties" is also a field's name inside "properties".
    def visit(node: dict[str, Any]) -> None:
        for key in ("properties", "patternProperties"):
            for child in (node.get(key) or {}).values():
                visit(child)
        for key in ("items", "additionalProperties", "not"):
            if isinstance(node.get(key), dict):
                visit(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key) or []:
                visit(child)
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        if node.get("x-kubernetes-int-or-string") and "type" not in node:
            node["type"] = ["integer", "string"]
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]

    visit(out)
    return out


def load_crds(folder: Path = CRDS) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON Schema, from every CRD in `folder`."""
    schemas = {}
    for path in sorted(folder.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def object_id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def is_builtin(api_version: str) -> bool:
    """Core and k8s.io groups: kubernetes-validate has their schemas."""
    group = api_version.rpartition("/")[0]
    return group == "" or group.endswith(".k8s.io") or "." not in group


def crd_problems(
    objects: Iterable[dict[str, Any]], schemas: dict[tuple[str, str], dict[str, Any]], where: str
) -> list[str]:
    """Each custom resource against its vendored CRD's schema."""
    problems = []
    for obj in objects:
        if is_builtin(obj["apiVersion"]):
            continue
        schema = schemas.get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            problems.append(
                f"{where} {object_id(obj)}: no CRD for {obj['apiVersion']} {obj['kind']} in"
                " deploy/crds to validate it against"
            )
            continue
        validator = jsonschema.Draft7Validator(schema)
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(top)"
            problems.append(f"{where} {object_id(obj)}: {path}: {error.message}")
    return problems


def selected_names(expr: str) -> Iterator[tuple[str | None, dict[str, str]]]:
    """(metric name or None, equality matchers) of every vector selector in a PromQL
    expression; raises ValueError when it does not parse."""
    found: list[tuple[str | None, dict[str, str]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            equal = {
                m.name: m.value
                for m in node.matchers.matchers
                if m.op == promql_parser.MatchOp.Equal
            }
            found.append((node.name or equal.get("__name__"), equal))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    yield from found


def expression_problems(where: str, expr: str, known: set[str], bounds: set[str]) -> list[str]:
    """Parse errors, unknown metric names and unknown bucket bounds of one expression."""
    try:
        selectors = list(selected_names(expr))
    except ValueError as exc:
        return [f"{where}: does not parse as PromQL ({exc}): {' '.join(expr.split())}"]
    problems = []
    for name, equal in selectors:
        if name is None:
            problems.append(f"{where}: a selector without a metric name")
        elif name not in known:
            problems.append(f"{where}: unknown metric {name}")
        elif name.endswith("_bucket") and "le" in equal and equal["le"] not in bounds:
            problems.append(f"{where}: {name} has no bucket le={equal['le']!r}")
    return problems


def grafana_to_promql(expr: str) -> str:
    """A Grafana query with its variables replaced, so it parses as PromQL."""
    expr = GRAFANA_INTERVAL.sub("5m", expr)
    return GRAFANA_VARIABLE.sub("value", expr)


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of a Grafana dashboard."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    for panel in panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        match = LABEL_VALUES.match(text)
        if match is None:
            yield f"variable {variable.get('name')}", text
        elif match.group(1):
            yield f"variable {variable.get('name')}", match.group(1)


def rule_expressions(rule: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every rule of a PrometheusRule."""
    for group in rule["spec"].get("groups") or []:
        for entry in group.get("rules") or []:
            name = entry.get("alert") or entry.get("record")
            yield f"{object_id(rule)} {group['name']}/{name}", str(entry["expr"])


def monitoring_problems(
    objects: list[dict[str, Any]], where: str, exported: tuple[set[str], set[str]]
) -> tuple[list[str], int]:
    """(problems, expressions checked) for the PrometheusRules and dashboards of an overlay."""
    names, bounds = exported
    rules = [o for o in objects if o["kind"] == "PrometheusRule"]
    recorded = {
        entry["record"]
        for rule in rules
        for group in rule["spec"].get("groups") or []
        for entry in group.get("rules") or []
        if "record" in entry
    }
    known = names | recorded
    problems: list[str] = []
    checked = 0
    for rule in rules:
        for place, expr in rule_expressions(rule):
            problems += expression_problems(f"{where} {place}", expr, known, bounds)
            checked += 1
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] != "ConfigMap" or DASHBOARD_LABEL not in labels:
            continue
        for key, text in (obj.get("data") or {}).items():
            try:
                dashboard = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(f"{where} {object_id(obj)} {key}: not JSON: {exc}")
                continue
            for place, expr in dashboard_queries(dashboard):
                problems += expression_problems(
                    f"{where} {object_id(obj)} {key} {place}",
                    grafana_to_promql(expr),
                    known,
                    bounds,
                )
                checked += 1
    return problems, checked
