"""The dependency rule of docs/architecture.md, checked on the source: which module may import
which. A refactor that breaks a rule fails here, naming the import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def sources(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]


@pytest.mark.parametrize("path", sources("secagg"), ids=lambda p: p.name)
def test_the_crypto_core_imports_neither_dp_nor_protocol(path):
    bad = {m for m in imports_of(path) if m.split(".")[0] in ("dp", "protocol")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sources("dp"), ids=lambda p: p.name)
def test_dp_imports_neither_secagg_nor_protocol(path):
    bad = {m for m in imports_of(path) if m.split(".")[0] in ("secagg", "protocol")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", [ROOT / "protocol/server.py", *sources("protocol/stages")],
                         ids=lambda p: p.name)
def test_the_server_machine_does_not_import_the_client_machine(path):
    assert "protocol.client" not in imports_of(path)


@pytest.mark.parametrize("path", [ROOT / "protocol" / f"{m}.py" for m in (
    "client", "server", "transitions", "transcript", "messages", "wire", "config", "errors",
    "driver", "participant", "dp_plan", "client_state", "real_sum")] + sources("protocol/stages"),
    ids=lambda p: p.name)
def test_the_core_does_not_import_its_hosts(path):
    hosts = ("protocol.simulate", "protocol.dp_round", "protocol.net", "protocol.cli",
             "protocol.flower", "protocol.conformance")
    bad = {m for m in imports_of(path) if any(m == h or m.startswith(h + ".") for h in hosts)}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sources("protocol/flower"), ids=lambda p: p.name)
def test_the_flower_host_uses_neither_the_simulator_nor_the_network_hosts(path):
    bad = {m for m in imports_of(path) if m.startswith(("protocol.simulate", "protocol.dp_round",
                                                        "protocol.net.server",
                                                        "protocol.net.client"))}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_only_the_flower_host_imports_flower():
    """The Flower host, and the conformance target that drives its mod."""
    for path in sources("secagg", "dp", "protocol"):
        if "flower" in path.parts or path == ROOT / "protocol/conformance/flower_target.py":
            continue
        assert not {m for m in imports_of(path) if m.split(".")[0] == "flwr"}, path.name


def test_the_network_client_takes_nothing_private_from_the_network_server():
    got = imports_of(ROOT / "protocol/net/client.py")
    assert not {m for m in got if m.startswith("protocol.net.server")}


def test_importing_the_network_hosts_does_not_load_the_simulator():
    code = ("import sys, protocol.net.server, protocol.net.client; "
            "print(sorted(m for m in sys.modules if m in "
            "('protocol.simulate', 'protocol.dp_round')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == "[]"


def _exception_classes():
    import importlib
    import inspect

    out: dict[str, set[str]] = {}
    for path in sources("secagg", "dp", "protocol"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name.removesuffix(".__init__"))
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                out.setdefault(cls_name, set()).add(cls.__module__)
    return out


def test_no_two_exception_classes_share_a_name():
    twice = {n: sorted(m) for n, m in _exception_classes().items() if len(m) > 1}
    assert not twice, twice
