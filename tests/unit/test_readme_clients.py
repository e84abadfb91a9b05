"""The README's grpcurl and buf curl commands and the Node example name real RPCs and fields.

tests/e2e/test_readme_grpcurl.py runs the grpcurl walk-through against live services; this
checks every command of the section, and examples/node/client.js, against the descriptors, so
a renamed RPC or field cannot leave a README line or the example behind.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from accounts.v1 import accounts_pb2
from google.protobuf import descriptor, descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2  # noqa: F401  (registers grpc.health.v1 in the pool)
from imaging.v1 import imaging_pb2  # noqa: F401  (registers imaging.v1 in the pool)

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Calling it with grpcurl"
PORTS = {"50051": ("accounts.v1.", "grpc.health.v1."), "50052": ("imaging.v1.", "grpc.health.v1.")}


def section() -> str:
    text = (REPO / "README.md").read_text()
    assert SECTION in text, f"README has no {SECTION!r}"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def commands(text: str, tool: str) -> list[list[str]]:
    """Each `grpcurl ...` / `buf curl ...` command of the section's sh blocks and inline code."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    inline = re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))
    found = []
    for line in "\n".join(blocks + inline).replace("\\\n", " ").splitlines():
        start = line.find(tool + " ")
        if start < 0 or "<<" in line:
            continue  # the heredoc CreateUser is built by the shell; the e2e test runs it
        found.append(shlex.split(line[start:].split(")", 1)[0]))
    return found


def method(full_name: str) -> descriptor.MethodDescriptor:
    service, name = full_name.rsplit("/", 1)
    return descriptor_pool.Default().FindServiceByName(service).methods_by_name[name]


def check_body(m: descriptor.MethodDescriptor, body: str) -> None:
    """The JSON body parses strictly (no unknown field) into the method's request type."""
    if "$" in body or body.startswith("@"):
        return  # built by the shell at run time; the e2e test runs those
    request = message_factory.GetMessageClass(m.input_type)()
    json_format.Parse(body, request)


def test_buf_curl_commands_name_real_methods_and_fields() -> None:
    found = commands(section(), "buf curl")
    assert len(found) >= 4, found
    urls = 0
    for argv in found:
        body = argv[argv.index("-d") + 1] if "-d" in argv else "{}"
        for arg in argv:
            if match := re.fullmatch(r"http://localhost:(\d+)/([\w.]+/\w+)", arg):
                port, full_name = match.groups()
                assert full_name.startswith(PORTS[port]), arg
                check_body(method(full_name), body)
                urls += 1
    assert urls >= 3


def test_grpcurl_commands_name_real_methods_and_fields() -> None:
    found = commands(section(), "grpcurl")
    assert len(found) >= 5, found
    calls = 0
    for argv in found:
        if "describe" in argv or "list" in argv:
            continue
        port = next(a.split(":")[1] for a in argv if a.startswith("localhost:"))
        full_name = argv[-1]
        assert full_name.startswith(PORTS[port]), argv
        check_body(method(full_name), argv[argv.index("-d") + 1])
        calls += 1
    assert calls >= 4


def js_names(field_owner: descriptor.Descriptor) -> set[str]:
    return {f.json_name for f in field_owner.fields} | {o.name for o in field_owner.oneofs}


def test_node_example_names_real_methods_and_fields() -> None:
    service = accounts_pb2.DESCRIPTOR.services_by_name["AccountsService"]
    rpcs = {m.name[:1].lower() + m.name[1:] for m in service.methods}
    create = accounts_pb2.CreateUserRequest.DESCRIPTOR
    user = accounts_pb2.User.DESCRIPTOR
    thumbnail = accounts_pb2.Thumbnail.DESCRIPTOR
    statuses = set(accounts_pb2.ThumbnailStatus.keys())
    client = (REPO / "examples/node/client.js").read_text()
    readme_js = re.search(r"```js\n(.*?)```", section(), re.S)
    assert readme_js, "no js block in the section"
    for source in (client, readme_js.group(1)):
        called = set(re.findall(r"client\.(\w+)\(", source))
        assert called and called <= rpcs, called - rpcs
        cases = set(re.findall(r'case: "(\w+)"', source))
        assert cases and cases <= js_names(create), cases
        for key in re.findall(r"^\s+(\w+):", source, re.M):
            assert key in js_names(create) | {"case", "value", "baseUrl"}, key
    used = set(re.findall(r"\b(?:user|last|created)\.(\w+)", client))
    assert used and used <= js_names(user), used - js_names(user)
    used = set(re.findall(r"\bt\?\.(\w+)", client))
    assert used and used <= js_names(thumbnail), used - js_names(thumbnail)
    used = set(re.findall(r"ThumbnailStatus\.(\w+)", client))
    assert used and {f"THUMBNAIL_STATUS_{u}" for u in used} <= statuses, used
    assert set(re.findall(r"thumbnails\?\.\[name\]", client))
    for size in ("small", "medium", "large"):
        assert size in accounts_pb2.Thumbnails.DESCRIPTOR.fields_by_name
