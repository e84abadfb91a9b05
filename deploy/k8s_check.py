"""`make k8s-check`: render, validate offline and scan every kustomize overlay and the Dockerfile.

For each directory in deploy/k8s/overlays: `kubectl kustomize` renders it, `kubernetes-validate
--strict` checks every object against the Kubernetes schemas (custom resources such as KEDA's
ScaledObject only warn), and checkov scans it with the skips of deploy/checkov-skips.yaml and no
failed check allowed. The Dockerfile gets checkov and hadolint. Also checked: every setting of
the README's configuration table reaches the containers of the service that uses it (its "used
by" column) through the dev overlay's ConfigMap or that service's Secret, and no Deployment gets
a Secret key its service does not use; compose.yaml sets only those settings and runs the dev
overlay's images of PostgreSQL, NATS and MinIO; requirements-runtime.lock (the image's) pins the
versions requirements.lock tests.
Exit status 1 on any problem, each one named on its own line.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
SKIPS_FILE = ROOT / "deploy" / "checkov-skips.yaml"
DOCKERFILE = "Dockerfile"
SETTINGS_OVERLAY = "dev"  # the overlay that carries a Secret, so every setting is rendered


@dataclass(frozen=True)
class Skip:
    check: str
    objects: tuple[str, ...]
    overlays: tuple[str, ...] | None  # None: every overlay
    reason: str


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


def images(objects: list[dict[str, Any]]) -> set[str]:
    return {
        c["image"]
        for o in objects
        if "template" in o.get("spec", {})
        for c in o["spec"]["template"]["spec"]["containers"]
    }


def compose_problems(dev_objects: list[dict[str, Any]], settings: set[str]) -> list[str]:
    """compose.yaml sets only documented settings and runs the dev overlay's infrastructure."""
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    problems = []
    for name in ("accounts", "imaging"):
        unknown = sorted(set(services[name]["environment"]) - settings)
        if unknown:
            problems.append(f"compose.yaml: {name} sets {unknown}, not in the README table")
    for image in {s["image"] for s in services.values()} - images(dev_objects):
        if not image.startswith("avatar-thumbnails:"):
            problems.append(f"compose.yaml: image {image} differs from overlays/dev's")
    return problems


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


def check_overlay(
    overlay: str, args: argparse.Namespace, skips: list[Skip]
) -> tuple[list[str], Path | None]:
    """Renders and validates one overlay; returns its problems and the file for checkov."""
    rendered = run([args.kubectl, "kustomize", str(OVERLAYS / overlay)])
    if rendered.returncode != 0:
        return [f"kustomize overlays/{overlay}: {rendered.stderr.strip()}"], None
    path = args.out / f"{overlay}.yaml"
    path.write_text(rendered.stdout)
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    validated = run([args.validate, "--strict", "--quiet", str(path)])
    lines = (validated.stdout + validated.stderr).replace(str(path), overlay).splitlines()
    warnings = [line for line in lines if line.startswith("WARN")]
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
    problems += annotate(objects, overlay, skips)
    scanned = args.out / "checkov" / f"{overlay}.yaml"
    scanned.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return problems, scanned


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
    targets = []
    for overlay in overlays:
        found, scanned = check_overlay(overlay, args, skips)
        problems += found
        if scanned:
            targets.append((Scan(f"overlays/{overlay}"), scanned, "kubernetes"))
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
