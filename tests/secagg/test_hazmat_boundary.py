"""No production module imports secagg.hazmat (explicit seeds, nonces, coefficients)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("secagg", "dp", "protocol")


def hazmat_imports(source: str, module: str) -> list[str]:
    """Every way ``source`` (the module ``module``) could reach secagg.hazmat."""
    found = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("secagg.hazmat")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("secagg.hazmat"):
                found.append(target)
            elif target == "secagg":
                found += [f"secagg.{a.name}" for a in node.names if a.name == "hazmat"]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            if any(isinstance(a, ast.Constant) and "hazmat" in str(a.value)
                   and "cryptography" not in str(a.value) for a in node.args):
                found.append("__import__")
    return found


def production_modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            if rel.as_posix() == "secagg/hazmat":
                continue
            yield ".".join(rel.parts), path


@pytest.mark.parametrize("module,path", list(production_modules()), ids=str)
def test_module_does_not_import_hazmat(module, path):
    assert hazmat_imports(path.read_text(), module) == []


@pytest.mark.parametrize("line", [
    "from . import hazmat", "from .hazmat import aead_encrypt_with_nonce",
    "from secagg import hazmat", "import secagg.hazmat", "from secagg.hazmat import x",
    "__import__('secagg.hazmat')",
])
def test_detector_catches_every_form(line):
    assert hazmat_imports(line, "secagg.masking")


def test_detector_allows_pyca_hazmat():
    assert hazmat_imports("from cryptography.hazmat.primitives import hashes", "secagg.prg") == []
