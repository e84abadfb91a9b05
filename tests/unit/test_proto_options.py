"""Every .proto under protos/ carries the language package options client authors rely on.

The values are the ones buf's managed mode would set, so code generated with or without managed
mode lands in the same packages; dropping or changing one fails here before a client breaks.
The files are compiled from protos/ itself (all of them, found by glob), and gen/ must agree.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
PROTOS = REPO / "protos"
GO_MODULE = "avatar-thumbnails/gen/go"


def managed_mode_options(proto_path: str, package: str) -> dict[str, object]:
    """What buf's managed mode sets by default for a file (go_package from GO_MODULE)."""
    parts = package.split(".")
    stem = Path(proto_path).stem
    upper = [p[:1].upper() + p[1:] for p in parts]
    # The first letter of each component but the version, padded with X to three letters.
    initials = "".join(p[0].upper() for p in parts[:-1])
    return {
        "java_package": f"com.{package}",
        "java_multiple_files": True,
        "java_outer_classname": "".join(w.capitalize() for w in stem.split("_")) + "Proto",
        "csharp_namespace": ".".join(upper),
        "php_namespace": "\\".join(upper),
        "php_metadata_namespace": "\\".join(upper) + "\\GPBMetadata",
        "ruby_package": "::".join(upper),
        "objc_class_prefix": initials.ljust(3, "X"),
        "go_package": f"{GO_MODULE}/{Path(proto_path).parent.as_posix()};{''.join(parts)}",
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[descriptor_pb2.FileDescriptorProto]:
    """protos/**/*.proto compiled to descriptors by grpc_tools' protoc."""
    names = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))
    assert names, "no .proto files found"
    out = tmp_path_factory.mktemp("descriptors") / "set.binpb"
    protoc = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--descriptor_set_out={out}",
    ]
    result = subprocess.run([*protoc, *names], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert sorted(f.name for f in files) == names
    return list(files)


def test_every_proto_has_the_managed_mode_options(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    for f in files:
        wanted = managed_mode_options(f.name, f.package)
        got = {name: getattr(f.options, name) for name in wanted}
        present = {field.name for field, _ in f.options.ListFields()}
        unset = [name for name in wanted if name not in present]
        assert not unset, f"{f.name}: options not set: {unset}"
        assert got == wanted, f"{f.name}"


def test_the_expected_values_for_this_api() -> None:
    """The derivation above, spelled out once, so a mistake in it cannot hide."""
    assert managed_mode_options("accounts/v1/events.proto", "accounts.v1") == {
        "java_package": "com.accounts.v1",
        "java_multiple_files": True,
        "java_outer_classname": "EventsProto",
        "csharp_namespace": "Accounts.V1",
        "php_namespace": "Accounts\\V1",
        "php_metadata_namespace": "Accounts\\V1\\GPBMetadata",
        "ruby_package": "Accounts::V1",
        "objc_class_prefix": "AXX",
        "go_package": "avatar-thumbnails/gen/go/accounts/v1;accountsv1",
    }


def test_generated_python_carries_the_same_options(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    for f in files:
        module = importlib.import_module(f.name.removesuffix(".proto").replace("/", ".") + "_pb2")
        assert module.DESCRIPTOR.GetOptions() == f.options, f"gen/ is stale for {f.name}"
