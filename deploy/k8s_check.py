"""`make k8s-check`: render, validate offline and scan every kustomize overlay and the Dockerfile.

For each directory in deploy/k8s/overlays: `kubectl kustomize` renders it, `kubernetes-validate
--strict` checks every object against the Kubernetes schemas (custom resources such as KEDA's
ScaledObject only warn), and checkov scans it with the skips of deploy/checkov-skips.yaml and no
failed check allowed. The Dockerfile gets checkov and hadolint. Also checked: every setting of
the README's configuration table reaches the containers of the service that uses it (its "used
by" column) through the dev overlay's ConfigMap or that service's Secret, and no Deployment gets
a Secret key its service does not use; an autoscaler of the imaging workers (KEDA ScaledObject
or HPA) stays within MAX_ACK_PENDING / RENDER_PROCESSES replicas; compose.yaml is consistent
(dependencies, health checks, volumes, mounted files), sets only those settings and runs the dev
overlay's images of PostgreSQL, NATS and S3 (SeaweedFS); no overlay and no compose service runs
the archived MinIO server or mc; requirements-runtime.lock (the image's) pins the versions
requirements.lock tests. The Namespace is rendered only by deploy/k8s/namespace, never by an
overlay (whose `kubectl delete -k` would delete it with its volumes and Secrets), and every
overlay's objects go into it. Custom resources are validated against the CRDs in deploy/crds
(unknown fields fail, and so does a custom resource without its CRD there), and the PromQL of
PrometheusRules and Grafana dashboards is parsed and checked against the metric names the
services export (deploy/monitoring_check.py); at least one overlay must render them.
Exit status 1 on any problem, each one named on its own line.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from monitoring_check import crd_problems, exported_metrics, load_crds, monitoring_problems

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
NAMESPACE_DIR = ROOT / "deploy" / "k8s" / "namespace"
SKIPS_FILE = ROOT / "deploy" / "checkov-skips.yaml"
DOCKERFILE = "Dockerfile"
SETTINGS_OVERLAY = "dev"  # the overlay that carries a Secret, so every setting is rendered


@dataclass(frozen=True)
class Skip:
    check: str
    objects: tuple[str, ...]
    overlays: tuple[str, ...] | None  # None: every overlay
    reason: str


@dataclass(frozen=True)
class Context:
    """What every overlay is checked against."""

    skips: list[Skip]
    namespace: str | None  # the one deploy/k8s/namespace renders
    crds: dict[tuple[str, str], dict[str, Any]]
    metrics: tuple[set[str], set[str]]  # metric names, bucket bounds


@dataclass
class Scan:
    target: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0


def load_skips(path: Path) -> list[Skip]:
    skips = []
    for entry in yaml.safe_load(path.read_text())["skips"]:
        reason = " ".join(str(entry.get("reason", "")).split())
        if not reason:
            raise SystemExit(f"{path.name}: {entry['check']} has no reason")
        overlays = entry.get("overlays")
        skips.append(
            Skip(
                entry["check"],
                tuple(entry["objects"]),
                tuple(overlays) if overlays else None,
                reason,
            )
        )
    return skips


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)


def object_id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def annotate(objects: list[dict[str, Any]], overlay: str, skips: list[Skip]) -> list[str]:
    """Adds checkov.io/skip annotations for this overlay's skips; returns the problems found."""
    by_id = {object_id(o): o for o in objects}
    problems = []
    for skip in skips:
        if skip.objects == (DOCKERFILE,) or (skip.overlays and overlay not in skip.overlays):
            continue
        for name in skip.objects:
            obj = by_id.get(name)
            if obj is None:
                problems.append(f"{SKIPS_FILE.name}: {skip.check} names {name}, not in {overlay}")
                continue
            annotations = obj["metadata"].setdefault("annotations", {})
            key = f"checkov.io/skip{len(annotations) + 1}"
            annotations[key] = f"{skip.check}={skip.reason}"
    return problems


def unknown_overlays(skips: list[Skip], overlays: list[str]) -> list[str]:
    return [
        f"{SKIPS_FILE.name}: {s.check} names overlay {name}, which does not exist"
        for s in skips
        for name in s.overlays or ()
        if name not in overlays
    ]


SERVICES = ("accounts", "imaging")


def readme_settings() -> dict[str, set[str]]:
    """The variable names in the first column of the README's configuration table, each with
    the services of its "used by" column (both: accounts and imaging)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    users: dict[str, set[str]] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = line.split("|")
            used_by = cells[2].strip()
            services = set(SERVICES) if used_by == "both" else {used_by}
            for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[1]):
                users.setdefault(name, set()).update(services)
    return users


def rendered_settings(objects: list[dict[str, Any]]) -> dict[str, tuple[set[str], set[str]]]:
    """For each Deployment, the keys its containers get (through envFrom and env), and those
    of them that come from a Secret."""
    data = {
        (o["kind"], o["metadata"]["name"]): set(o.get("data") or {})
        for o in objects
        if o["kind"] in ("ConfigMap", "Secret")
    }
    result = {}
    for o in objects:
        if o["kind"] != "Deployment":
            continue
        keys: set[str] = set()
        secret: set[str] = set()
        for c in o["spec"]["template"]["spec"]["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    keys |= data.get(("ConfigMap", source["configMapRef"]["name"]), set())
                if "secretRef" in source:
                    secret |= data.get(("Secret", source["secretRef"]["name"]), set())
            keys |= {e["name"] for e in c.get("env", [])}
            secret |= {
                e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
            }
        result[o["metadata"]["name"]] = (keys | secret, secret)
    return result


def settings_problems(objects: list[dict[str, Any]], overlay: str) -> list[str]:
    """Each service gets every setting it uses, and no secret it does not."""
    users = readme_settings()
    problems = []
    for name, (keys, secret) in rendered_settings(objects).items():
        wanted = {setting for setting, services in users.items() if name in services}
        if missing := sorted(wanted - keys):
            problems.append(f"overlays/{overlay} Deployment/{name} lacks {missing}")
        if unused := sorted(secret - wanted):
            problems.append(
                f"overlays/{overlay} Deployment/{name} gets secrets {unused} it does not use"
            )
    problems += compose_problems(objects, set(users) | {"MALLOC_ARENA_MAX"})
    return problems


def container_env(deployment: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    """The variables a Deployment's first container gets from its ConfigMaps, Secrets (those
    rendered) and env values, a later source winning as in the kubelet."""
    data: dict[tuple[str, str], dict[str, str]] = {}
    for o in objects:
        if o["kind"] == "ConfigMap":
            data["ConfigMap", o["metadata"]["name"]] = dict(o.get("data") or {})
        elif o["kind"] == "Secret":
            decoded = {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
            data["Secret", o["metadata"]["name"]] = decoded | dict(o.get("stringData") or {})
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in source:
                env |= data.get((kind, source[ref]["name"]), {})
    env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return env


def autoscaler_ceiling(obj: dict[str, Any]) -> tuple[str, str, int] | None:
    """(target Deployment, field, replica ceiling) of a KEDA ScaledObject or an HPA."""
    spec = obj.get("spec", {})
    if obj["kind"] == "ScaledObject":
        return spec["scaleTargetRef"]["name"], "maxReplicaCount", spec.get("maxReplicaCount", 100)
    if obj["kind"] == "HorizontalPodAutoscaler":
        return spec["scaleTargetRef"]["name"], "maxReplicas", spec["maxReplicas"]
    return None


def runs_imaging(deployment: dict[str, Any]) -> bool:
    return any(
        "imaging_service" in [*c.get("command", []), *c.get("args", [])]
        for c in deployment["spec"]["template"]["spec"]["containers"]
    )


def replica_ceiling_problems(objects: list[dict[str, Any]], overlay: str) -> list[str]:
    """An autoscaler of the imaging workers never goes past MAX_ACK_PENDING / RENDER_PROCESSES
    replicas: the consumer hands out MAX_ACK_PENDING requests to all replicas together, each
    renders RENDER_PROCESSES at once, so replicas beyond that only wait for acknowledgements."""
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    problems = []
    for obj in objects:
        found = autoscaler_ceiling(obj)
        target = deployments.get(found[0]) if found else None
        if not found or target is None or not runs_imaging(target):
            continue
        _, field, ceiling = found
        where = f"overlays/{overlay} {object_id(obj)}"
        env = container_env(target, objects)
        try:
            processes = int(env["RENDER_PROCESSES"])
            max_ack_pending = int(env.get("MAX_ACK_PENDING") or 4 * processes)
        except (KeyError, ValueError):
            problems.append(
                f"{where}: Deployment/{found[0]} needs RENDER_PROCESSES (and MAX_ACK_PENDING or"
                f" its default) set as integers to bound {field} (got"
                f" {env.get('RENDER_PROCESSES')!r}, {env.get('MAX_ACK_PENDING')!r})"
            )
            continue
        if ceiling * processes > max_ack_pending:
            problems.append(
                f"{where}: {field} {ceiling} x RENDER_PROCESSES {processes} ="
                f" {ceiling * processes} exceeds MAX_ACK_PENDING {max_ack_pending}, so replicas"
                f" past {max_ack_pending // processes} would idle: lower {field} to at most"
                f" {max_ack_pending // processes} or raise MAX_ACK_PENDING to"
                f" {ceiling * processes}"
            )
    return problems


def images(objects: list[dict[str, Any]]) -> set[str]:
    return {
        c["image"]
        for o in objects
        if "template" in o.get("spec", {})
        for key in ("initContainers", "containers")
        for c in o["spec"]["template"]["spec"].get(key, [])
    }


# The MinIO server and its client mc: their repositories are archived upstream, so they get no
# more fixes; S3 is SeaweedFS locally and any S3 service in production.
ARCHIVED_IMAGE = re.compile(r"(^|/)(minio/(minio|mc)|bitnami/minio(-client)?)([:@]|$)")


def archived_images(where: str, found: set[str]) -> list[str]:
    return [
        f"{where}: image {image} is the archived MinIO server or mc; run SeaweedFS instead"
        for image in sorted(found)
        if ARCHIVED_IMAGE.search(image)
    ]


COMPOSE_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def compose_structure_problems(compose: dict[str, Any]) -> list[str]:
    """What `docker compose config` would refuse or what could never start: a service without an
    image, a dependency on a missing service or health check, a named volume not declared (or
    declared and unused), a bind mount of a file missing from the repository."""
    services: dict[str, Any] = compose.get("services") or {}
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    problems = []
    for name, service in services.items():
        where = f"compose.yaml: service {name}"
        if not service.get("image") and not service.get("build"):
            problems.append(f"{where} has neither image nor build")
        problems += dependency_problems(where, service, services)
        for source in mount_sources(service):
            if source.startswith((".", "/", "~")):
                if source.startswith(".") and not (ROOT / source).exists():
                    problems.append(f"{where} mounts {source}, which does not exist")
                continue
            used.add(source)
            if source not in declared:
                problems.append(f"{where} uses volume {source}, not declared under volumes")
    problems += [
        f"compose.yaml: volume {v} is declared but unused" for v in sorted(declared - used)
    ]
    return problems


def dependency_problems(where: str, service: dict[str, Any], services: dict[str, Any]) -> list[str]:
    depends = service.get("depends_on") or {}
    conditions = (
        {target: "service_started" for target in depends}
        if isinstance(depends, list)
        else {
            target: (spec or {}).get("condition", "service_started")
            for target, spec in depends.items()
        }
    )
    problems = []
    for target, condition in conditions.items():
        if target not in services:
            problems.append(f"{where} depends on {target}, which is not a service")
        elif condition not in COMPOSE_CONDITIONS:
            problems.append(f"{where}: depends_on {target} has condition {condition!r}")
        elif condition == "service_healthy" and "healthcheck" not in services[target]:
            problems.append(f"{where} waits for {target} to be healthy; it has no healthcheck")
    return problems


def mount_sources(service: dict[str, Any]) -> list[str]:
    """The named volumes and host paths a service mounts (short or long syntax; not tmpfs)."""
    return [
        str(m.get("source", "")) if isinstance(m, dict) else m.split(":")[0]
        for m in service.get("volumes") or []
        if not isinstance(m, dict) or m.get("type", "volume") in ("volume", "bind")
    ]


def compose_problems(dev_objects: list[dict[str, Any]], settings: set[str]) -> list[str]:
    """compose.yaml is well-formed, sets only documented settings and runs the dev overlay's
    infrastructure images."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    problems = compose_structure_problems(compose)
    for name in ("accounts", "imaging"):
        unknown = sorted(set(services[name]["environment"]) - settings)
        if unknown:
            problems.append(f"compose.yaml: {name} sets {unknown}, not in the README table")
    found = {s["image"] for s in services.values() if s.get("image")}
    for image in found - images(dev_objects):
        if not image.startswith("avatar-thumbnails:"):
            problems.append(f"compose.yaml: image {image} differs from overlays/dev's")
    return problems + archived_images("compose.yaml", found)


def pins(lock: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", lock.read_text(), re.MULTILINE)
    return {normalized(name): version for name, version in found}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_problems() -> list[str]:
    """The image's lock holds every runtime dependency, at the version the tests ran with."""
    tested = pins(ROOT / "requirements.lock")
    runtime = pins(ROOT / "requirements-runtime.lock")
    fix = "re-lock requirements-runtime.lock (command in its header)"
    problems = [
        f"requirements-runtime.lock pins {name}=={version}, requirements.lock "
        f"{tested.get(name, 'nothing')}: {fix}"
        for name, version in runtime.items()
        if tested.get(name) != version
    ]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = normalized(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0])
        if name not in runtime:
            problems.append(f"requirements-runtime.lock lacks {name}: {fix}")
    return problems


def annotated_dockerfile(skips: list[Skip]) -> str:
    """The Dockerfile with checkov's suppression comments for its skips on top."""
    lines = [f"# checkov:skip={s.check}: {s.reason}" for s in skips if DOCKERFILE in s.objects]
    return "\n".join([*lines, (ROOT / DOCKERFILE).read_text()])


def checkov_command(checkov: str, target: Path, framework: str) -> list[str]:
    cmd = [checkov, "--file", str(target), "--framework", framework, "--output", "json"]
    return [*cmd, "--compact", "--skip-download"]


def read_checkov(scan: Scan, proc: subprocess.CompletedProcess[str]) -> list[str]:
    try:
        reports = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return [f"checkov {scan.target}: no report (exit {proc.returncode}): {proc.stderr[-2000:]}"]
    problems = []
    for report in reports if isinstance(reports, list) else [reports]:
        summary = report.get("summary", {})
        if summary.get("parsing_errors"):
            problems.append(f"checkov {scan.target}: {summary['parsing_errors']} parsing errors")
        scan.passed += summary.get("passed", 0)
        scan.failed += summary.get("failed", 0)
        scan.skipped += summary.get("skipped", 0)
        for failed in report.get("results", {}).get("failed_checks", []):
            problems.append(
                f"checkov {scan.target}: FAILED {failed['check_id']} {failed['check_name']}"
                f" ({failed['resource']})"
            )
    if scan.passed == 0:
        problems.append(f"checkov {scan.target}: found nothing to check")
    return problems


def namespace_problems(
    objects: list[dict[str, Any]], overlay: str, namespace: str | None
) -> list[str]:
    """An overlay renders no Namespace (`kubectl delete -k` would delete it and all it holds)
    and puts every object into the namespace of deploy/k8s/namespace."""
    problems = []
    for obj in objects:
        if obj["kind"] == "Namespace":
            problems.append(
                f"overlays/{overlay} renders {object_id(obj)}: `kubectl delete -k` would delete"
                " it with its volumes and Secrets; it belongs in deploy/k8s/namespace only"
            )
        elif namespace and obj["metadata"].get("namespace") != namespace:
            problems.append(
                f"overlays/{overlay} {object_id(obj)} is in namespace"
                f" {obj['metadata'].get('namespace')!r}, not {namespace!r} of deploy/k8s/namespace"
            )
    return problems


def check_namespace(args: argparse.Namespace) -> tuple[list[str], str | None]:
    """Renders and validates deploy/k8s/namespace: exactly one Namespace; returns its name."""
    rendered = run([args.kubectl, "kustomize", str(NAMESPACE_DIR)])
    if rendered.returncode != 0:
        return [f"kustomize k8s/namespace: {rendered.stderr.strip()}"], None
    path = args.out / "namespace.yaml"
    path.write_text(rendered.stdout)
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    validated = run([args.validate, "--strict", "--quiet", str(path)])
    print(f"k8s/namespace: {len(objects)} objects, schemas", end=" ")
    print("ok" if validated.returncode == 0 else "FAILED")
    problems = [
        f"kubernetes-validate: {line}"
        for line in (validated.stdout + validated.stderr).splitlines()
        if validated.returncode != 0
    ]
    if [o["kind"] for o in objects] != ["Namespace"]:
        problems.append(
            f"k8s/namespace renders {[object_id(o) for o in objects]}, not one Namespace"
        )
        return problems, None
    return problems, str(objects[0]["metadata"]["name"])


MISSING_SCHEMA = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+) ")


def crd_validated(line: str, crds: dict[tuple[str, str], dict[str, Any]]) -> bool:
    """Whether a kubernetes-validate line only says it has no schema for a custom resource
    whose CRD is in deploy/crds."""
    found = MISSING_SCHEMA.search(line)
    return found is not None and (found.group(2), found.group(1)) in crds


def check_overlay(
    overlay: str, args: argparse.Namespace, context: Context
) -> tuple[list[str], Path | None, int]:
    """Renders and validates one overlay; returns its problems, the file for checkov and the
    number of PromQL expressions it checked."""
    rendered = run([args.kubectl, "kustomize", str(OVERLAYS / overlay)])
    if rendered.returncode != 0:
        return [f"kustomize overlays/{overlay}: {rendered.stderr.strip()}"], None, 0
    path = args.out / f"{overlay}.yaml"
    path.write_text(rendered.stdout)
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    validated = run([args.validate, "--strict", "--quiet", str(path)])
    lines = (validated.stdout + validated.stderr).replace(str(path), overlay).splitlines()
    warnings = [line for line in lines if line.startswith("WARN")]
    # kubernetes-validate has no schemas for custom resources; those in deploy/crds are
    # validated below instead.
    lines = [line for line in lines if not crd_validated(line, context.crds)]
    warnings = [line for line in warnings if line in lines]
    verdict = "ok" if validated.returncode == 0 else "FAILED"
    print(
        f"overlays/{overlay}: {len(objects)} objects, schemas {verdict} ({len(warnings)} warnings)"
    )
    for line in warnings:
        print(f"  {line}")
    problems = []
    if validated.returncode != 0:
        problems += [f"kubernetes-validate: {line}" for line in lines if line not in warnings]
    if overlay == SETTINGS_OVERLAY:
        problems += settings_problems(objects, overlay)
    problems += replica_ceiling_problems(objects, overlay)
    problems += archived_images(f"overlays/{overlay}", images(objects))
    problems += namespace_problems(objects, overlay, context.namespace)
    found = crd_problems(objects, context.crds, f"overlays/{overlay}")
    if custom := sum(1 for o in objects if (o["apiVersion"], o["kind"]) in context.crds):
        print(f"  custom resources: {custom} validated against deploy/crds, {len(found)} problems")
    problems += found
    found, expressions = monitoring_problems(objects, f"overlays/{overlay}", context.metrics)
    if expressions:
        print(f"  PromQL: {expressions} expressions checked, {len(found)} problems")
    problems += found
    problems += annotate(objects, overlay, context.skips)
    scanned = args.out / "checkov" / f"{overlay}.yaml"
    scanned.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return problems, scanned, expressions


def run_checkov(checkov: str, targets: list[tuple[Scan, Path, str]]) -> list[str]:
    """Scans every target at once (checkov is slow to start); fills in the counts."""
    procs = [
        subprocess.Popen(
            checkov_command(checkov, path, framework),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _, path, framework in targets
    ]
    problems = []
    for (scan, _, _), proc in zip(targets, procs, strict=True):
        stdout, stderr = proc.communicate()
        done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        problems += read_checkov(scan, done)
        print(f"checkov {scan.target}: passed {scan.passed}, failed {scan.failed}", end="")
        print(f", skipped {scan.skipped}")
    return problems


def run_hadolint(hadolint: str) -> list[str]:
    result = run([hadolint, "--failure-threshold", "info", DOCKERFILE])
    print("hadolint Dockerfile:", "ok" if result.returncode == 0 else "FAILED")
    problems = [f"hadolint: {line}" for line in result.stdout.splitlines()]
    if result.returncode != 0 and not problems:
        problems.append(f"hadolint: exit {result.returncode}: {result.stderr.strip()}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for tool in ("kubectl", "validate", "checkov", "hadolint"):
        parser.add_argument(f"--{tool}", required=True, help=f"path of {tool}")
    parser.add_argument("--out", type=Path, required=True, help="folder for rendered manifests")
    args = parser.parse_args()

    skips = load_skips(SKIPS_FILE)
    overlays = sorted(p.name for p in OVERLAYS.iterdir() if (p / "kustomization.yaml").exists())
    problems = unknown_overlays(skips, overlays) + lock_problems()
    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "checkov").mkdir(parents=True)
    found, namespace = check_namespace(args)
    problems += found
    context = Context(skips, namespace, load_crds(), exported_metrics())
    targets = []
    expressions = 0
    for overlay in overlays:
        found, scanned, checked = check_overlay(overlay, args, context)
        problems += found
        expressions += checked
        if scanned:
            targets.append((Scan(f"overlays/{overlay}"), scanned, "kubernetes"))
    if not expressions:
        problems.append("no overlay renders components/monitoring: its PromQL went unchecked")
    dockerfile = args.out / "checkov" / DOCKERFILE
    dockerfile.write_text(annotated_dockerfile(skips))
    targets.append((Scan(DOCKERFILE), dockerfile, "dockerfile"))
    problems += run_checkov(args.checkov, targets)
    problems += run_hadolint(args.hadolint)

    print(f"skipped checks ({SKIPS_FILE.relative_to(ROOT)}):")
    for skip in skips:
        where = f" [{', '.join(skip.overlays or ['every overlay'])}]"
        where = "" if skip.objects == (DOCKERFILE,) else where
        print(f"  {skip.check} on {', '.join(skip.objects)}{where}: {skip.reason}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    scans = [scan for scan, _, _ in targets]
    print(
        f"k8s-check {'FAILED' if problems else 'ok'}: {len(overlays)} overlays and the Dockerfile;"
        f" checkov passed {sum(s.passed for s in scans)}, failed {sum(s.failed for s in scans)},"
        f" skipped {sum(s.skipped for s in scans)}; {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
