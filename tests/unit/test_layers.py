"""The layers of both services, checked by reading their imports (ast; nothing is imported).

Library errors are translated at the edges, so only the adapter that speaks to a library may
import it; the layers of accounts point one way (api and background -> use cases -> adapters);
and no module of ours imports itself through others.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("accounts_service", "imaging_service")

# library -> the modules allowed to import it (its adapters)
ADAPTERS: dict[str, frozenset[str]] = {
    "psycopg": frozenset({"accounts_service.adapters.db"}),
    "psycopg_pool": frozenset({"accounts_service.adapters.db"}),
    "minio": frozenset({"accounts_service.adapters.storage", "imaging_service.storage",
                        "imaging_service.adapters.storage"}),
    # imaging's streams.py declares and ensures the JetStream streams and consumer (bus.py's
    # other half): a NATS adapter too.
    "nats": frozenset({"accounts_service.adapters.bus", "imaging_service.bus",
                       "imaging_service.adapters.bus", "imaging_service.streams",
                       "imaging_service.adapters.streams"}),
}  # fmt: skip

# accounts layer -> the accounts layers it must not import
USE_CASES = ("users", "intake", "results", "watch", "events", "validation")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "accounts_service.adapters": ("api", "background", "main", *USE_CASES),
    **{f"accounts_service.{name}": ("api", "background", "main") for name in USE_CASES},
    "accounts_service.background": ("api", "main"),
    "accounts_service.api": ("background", "main"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for service in SERVICES
        for path in sorted((ROOT / service).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imports(path: Path, name: str, typing: bool = False) -> Iterator[str]:
    """Every module `path` imports at run time; with `typing`, also under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if not typing and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


ALL = modules()


@pytest.mark.parametrize("name", sorted(ALL))
def test_libraries_are_imported_only_by_their_adapters(name: str) -> None:
    wrong = {
        library
        for imported in imports(ALL[name], name)
        for library, allowed in ADAPTERS.items()
        if within(imported, library) and not any(within(name, a) for a in allowed)
    }
    assert not wrong, f"{name} imports {sorted(wrong)}: translate its errors in an adapter"


@pytest.mark.parametrize("name", sorted(n for n in ALL if n.startswith("accounts_service")))
def test_the_accounts_layers_point_one_way(name: str) -> None:
    rules = [layers for layer, layers in FORBIDDEN.items() if within(name, layer)]
    wrong = {
        imported
        for imported in imports(ALL[name], name)
        for layers in rules
        for layer in layers
        if within(imported, f"accounts_service.{layer}")
    }
    assert not wrong, f"{name} imports {sorted(wrong)} from a layer above it"


def test_no_import_cycle_among_our_modules() -> None:
    """Counting imports made for type checking only: a cycle hidden that way is still one."""
    graph = {
        name: {i for i in imports(path, name, typing=True) if i in ALL and i != name}
        for name, path in ALL.items()
    }
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError(
                "import cycle: " + " -> ".join([*trail[trail.index(name) :], name])
            )
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_the_scan_sees_what_it_checks() -> None:
    """The scan finds the adapters' imports: a rule over no imports would pass for nothing."""
    found = set(
        imports(ALL["accounts_service.adapters.db.pool"], "accounts_service.adapters.db.pool")
    )
    assert {"psycopg", "psycopg_pool"} <= found
    assert "minio" in set(imports(ALL["accounts_service.adapters.storage"], "x.y"))
    assert len([n for n in ALL if n.startswith("accounts_service.adapters")]) >= 8
