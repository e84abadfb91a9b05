"""deploy/monitoring_check.py and the namespace rule of deploy/k8s_check.py, on the real
monitoring component and vendored CRDs, and on broken copies of them."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy"))

import k8s_check  # noqa: E402
import monitoring_check  # noqa: E402

COMPONENT = ROOT / "deploy" / "k8s" / "components" / "monitoring"


@pytest.fixture(scope="module")
def exported() -> tuple[set[str], set[str]]:
    return monitoring_check.exported_metrics()


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], dict[str, Any]]:
    return monitoring_check.load_crds()


def component_objects() -> list[dict[str, Any]]:
    """The component's objects as an overlay renders them (namespace, the dashboard ConfigMap)."""
    objects = [
        yaml.safe_load((COMPONENT / name).read_text())
        for name in ("podmonitor.yaml", "prometheusrule.yaml")
    ]
    dashboard = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "avatars-dashboard", "labels": {"grafana_dashboard": "1"}},
        "data": {"avatars.json": (COMPONENT / "dashboard.json").read_text()},
    }
    for obj in [*objects, dashboard]:
        obj["metadata"]["namespace"] = "avatars"
    return [*objects, dashboard]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind)


def test_exported_metrics_are_the_series_names(exported: tuple[set[str], set[str]]) -> None:
    names, bounds = exported
    assert "accounts_time_to_thumbnail_seconds_bucket" in names
    assert "accounts_time_to_thumbnail_seconds_count" in names
    assert "imaging_jobs_failed_total" in names
    assert "imaging_jobs_failed" not in names
    assert "imaging_queue_pending_messages" in names
    assert "grpc_server_handled_total" in names
    assert "process_start_time_seconds" in names
    assert "process_cpu_seconds_total" in names
    assert {"30.0", "0.005", "+Inf"} <= bounds
    assert "30" not in bounds


def test_the_component_passes(exported: tuple[set[str], set[str]]) -> None:
    problems, checked = monitoring_check.monitoring_problems(component_objects(), "c", exported)
    assert problems == []
    rule = by_kind(component_objects(), "PrometheusRule")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads((COMPONENT / "dashboard.json").read_text())
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert checked == len(rules) + len(targets) + 1  # + the namespace variable's selector
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {
        "AvatarsTimeToThumbnailBudgetBurn",
        "AvatarsDeadLettersGrowing",
        "AvatarsOutboxLag",
        "AvatarsConsumerLag",
        "AvatarsRenderFailures",
    } <= alerts


def test_a_misspelt_metric_in_an_alert_fails(exported: tuple[set[str], set[str]]) -> None:
    objects = component_objects()
    rule = by_kind(objects, "PrometheusRule")
    pipeline = next(g for g in rule["spec"]["groups"] if g["name"] == "avatars-pipeline")
    entry = next(r for r in pipeline["rules"] if r.get("alert") == "AvatarsDeadLettersGrowing")
    entry["expr"] = "sum(rate(imaging_dead_leters_total[5m])) > 0"
    problems, _ = monitoring_check.monitoring_problems(objects, "c", exported)
    assert problems == [
        f"c PrometheusRule/avatars avatars-pipeline/{entry['alert']}: unknown metric"
        " imaging_dead_leters_total"
    ]


def test_a_misspelt_metric_in_the_dashboard_fails(exported: tuple[set[str], set[str]]) -> None:
    objects = component_objects()
    configmap = by_kind(objects, "ConfigMap")
    dashboard = json.loads(configmap["data"]["avatars.json"])
    panel = next(p for p in dashboard["panels"] if p.get("targets"))
    panel["targets"][0]["expr"] = 'max(imaging_queue_pending{namespace="$namespace"})'
    configmap["data"]["avatars.json"] = json.dumps(dashboard)
    problems, _ = monitoring_check.monitoring_problems(objects, "c", exported)
    assert len(problems) == 1
    assert problems[0].endswith("unknown metric imaging_queue_pending")


def test_a_series_recorded_by_no_rule_is_unknown(exported: tuple[set[str], set[str]]) -> None:
    objects = component_objects()
    rule = by_kind(objects, "PrometheusRule")
    slo = rule["spec"]["groups"][0]
    slo["rules"] = [
        r for r in slo["rules"] if r.get("record") != "avatars:time_to_thumbnail_slow:ratio_rate1h"
    ]
    problems, _ = monitoring_check.monitoring_problems(objects, "c", exported)
    assert problems
    assert all(
        p.endswith("unknown metric avatars:time_to_thumbnail_slow:ratio_rate1h") for p in problems
    )


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(imaging_dead_letters_total[5m])", "does not parse as PromQL"),
        ("rate(imaging_dead_letters_total)", "does not parse as PromQL"),
        (
            'sum by (le) (rate(accounts_time_to_thumbnail_seconds_bucket{le="30"}[5m]))',
            "no bucket le='30'",
        ),
        ('{__name__=~"imaging_.*"}', "a selector without a metric name"),
        ('{__name__="imaging_nope"}', "unknown metric imaging_nope"),
    ],
)
def test_bad_expressions_fail(exported: tuple[set[str], set[str]], expr: str, problem: str) -> None:
    names, bounds = exported
    problems = monitoring_check.expression_problems("x", expr, names, bounds)
    assert len(problems) == 1
    assert problem in problems[0]


def test_grafana_variables_are_replaced_before_parsing() -> None:
    query = 'rate(x{namespace="$namespace", pod=~"${pod:regex}"}[$__rate_interval])'
    assert (
        monitoring_check.grafana_to_promql(query) == 'rate(x{namespace="value", pod=~"value"}[5m])'
    )


def test_the_dashboard_variable_selector_is_checked(exported: tuple[set[str], set[str]]) -> None:
    dashboard = json.loads((COMPONENT / "dashboard.json").read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "namespace")
    variable["query"]["query"] = "label_values(process_started_seconds, namespace)"
    queries = dict(monitoring_check.dashboard_queries(dashboard))
    assert queries["variable namespace"] == "process_started_seconds"


def test_the_custom_resources_match_their_crds(
    crds: dict[tuple[str, str], dict[str, Any]],
) -> None:
    objects = component_objects()
    assert monitoring_check.crd_problems(objects, crds, "c") == []


def test_an_unknown_or_mistyped_field_fails(
    crds: dict[tuple[str, str], dict[str, Any]],
) -> None:
    objects = component_objects()
    monitor = by_kind(objects, "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["prot"] = "metrics"
    rule = by_kind(objects, "PrometheusRule")
    rule["spec"]["groups"][1]["rules"][0]["for"] = "ten minutes"
    problems = monitoring_check.crd_problems(objects, crds, "c")
    assert len(problems) == 2
    assert problems[0].startswith("c PodMonitor/avatars: spec.podMetricsEndpoints.0:")
    assert "'prot' was unexpected" in problems[0]
    assert problems[1].startswith("c PrometheusRule/avatars: spec.groups.1.rules.0.for:")


def test_a_custom_resource_without_a_crd_fails(
    crds: dict[tuple[str, str], dict[str, Any]],
) -> None:
    job = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJob", "metadata": {"name": "s"}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    policy = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "s"}}
    assert monitoring_check.crd_problems([job, service, policy], crds, "c") == [
        "c ScaledJob/s: no CRD for keda.sh/v1alpha1 ScaledJob in deploy/crds to validate it against"
    ]


def test_the_keda_scaled_object_matches_its_crd(
    crds: dict[tuple[str, str], dict[str, Any]],
) -> None:
    scaled = yaml.safe_load(
        (ROOT / "deploy" / "k8s" / "components" / "keda" / "scaledobject.yaml").read_text()
    )
    assert monitoring_check.crd_problems([scaled], crds, "c") == []
    scaled["spec"]["maxReplicaCount"] = "four"
    assert monitoring_check.crd_problems([scaled], crds, "c") == [
        "c ScaledObject/imaging: spec.maxReplicaCount: 'four' is not of type 'integer'"
    ]


def test_an_overlay_may_not_render_the_namespace() -> None:
    namespace = yaml.safe_load(
        (ROOT / "deploy" / "k8s" / "namespace" / "namespace.yaml").read_text()
    )
    objects = [*component_objects(), copy.deepcopy(namespace)]
    problems = k8s_check.namespace_problems(objects, "prod", "avatars")
    assert len(problems) == 1
    assert problems[0].startswith("overlays/prod renders Namespace/avatars:")


def test_every_object_goes_into_the_namespace() -> None:
    objects = component_objects()
    objects[0]["metadata"]["namespace"] = "default"
    assert k8s_check.namespace_problems(objects, "dev", "avatars") == [
        "overlays/dev PodMonitor/avatars is in namespace 'default', not 'avatars' of"
        " deploy/k8s/namespace"
    ]
    assert k8s_check.namespace_problems(component_objects(), "dev", "avatars") == []


def test_only_warnings_about_vendored_crds_are_dropped(
    crds: dict[tuple[str, str], dict[str, Any]],
) -> None:
    line = (
        "WARN prod Couldn't find schema for kind {} with api version {} for kubernetes version 1.37"
    )
    assert k8s_check.crd_validated(line.format("PodMonitor", "monitoring.coreos.com/v1"), crds)
    assert k8s_check.crd_validated(line.format("ScaledObject", "keda.sh/v1alpha1"), crds)
    assert not k8s_check.crd_validated(line.format("ScaledJob", "keda.sh/v1alpha1"), crds)
    assert not k8s_check.crd_validated("ERROR prod spec.replicas: 'two' is not of type", crds)
