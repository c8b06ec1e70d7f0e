"""Package-level rules: one base exception, hazmat boundary, core dependencies only."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import secagg
import secagg.errors as errors

SECAGG_DIR = Path(secagg.__file__).parent


def test_every_error_derives_from_the_base_and_a_builtin():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, Exception) and c.__module__ == errors.__name__]
    assert len(classes) > 10
    for c in classes:
        assert issubclass(c, secagg.SecAggError)
        if c is not secagg.SecAggError:
            assert issubclass(c, ValueError | TypeError), c


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_no_module_uses_pickle_or_marshal():
    root = SECAGG_DIR.parent
    for pkg in ("secagg", "dp", "protocol"):
        for path in (root / pkg).rglob("*.py"):
            imps = {i.split(".")[0] for i in _imports(path)}
            assert not imps & {"pickle", "marshal", "shelve", "dill", "cloudpickle"}, path


def test_core_uses_only_numpy_cryptography_and_stdlib():
    allowed = {"numpy", "cryptography", "__future__"} | set(sys.stdlib_module_names)
    for path in SECAGG_DIR.glob("*.py"):
        for name in _imports(path):
            if not name.startswith("."):
                assert name.split(".")[0] in allowed, (path.name, name)


def test_importing_secagg_does_not_import_torch_or_dp():
    code = "import sys, secagg; print(any(m in sys.modules for m in ('torch', 'dp', 'opacus')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
