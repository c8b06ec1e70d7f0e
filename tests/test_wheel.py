"""The package as it ships: build the sdist and the wheel from the tracked files, check them with
twine, install the wheel (not editable) into a fresh virtual environment, and run the main job
and a ledger check from it, outside the source tree. A module or data file missing from the
wheel fails here.

The fresh environment borrows the already-installed dependencies (numpy, cryptography, ...)
through a path file naming a directory of links to this environment's site-packages, leaving
out this checkout's own install (its editable finder, path files and metadata), so
``secagg``, ``dp`` and ``protocol`` can only come from the wheel. No network is used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: The environment of every command: nothing that would put the source tree on sys.path.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
CLEAN_ENV["PYTHONNOUSERSITE"] = "1"


def _run(*cmd, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=CLEAN_ENV)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("build")
    pytest.importorskip("twine")
    tmp = tmp_path_factory.mktemp("wheel")
    files = _run("git", "ls-files", "-z", cwd=ROOT)
    if files.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    src = tmp / "src"
    for name in filter(None, files.stdout.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    out = _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src, cwd=tmp)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    check = _run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists, cwd=tmp)
    assert check.returncode == 0, check.stdout + check.stderr
    env = tmp / "fresh"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=tmp).stdout.strip())
    # the dependencies, without this checkout's own install (editable finder, path files,
    # metadata): a directory of links to everything else in this environment's site-packages
    deps = tmp / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if not (name in ("secagg", "dp", "protocol")
                or name.startswith(("secagg_hardened", "secagg-hardened", "__editable__"))
                or name.endswith((".pth", ".egg-link"))):
            (deps / entry.name).symlink_to(entry)
    (site / "borrowed-dependencies.pth").write_text(f"{deps}\n")
    # --ignore-installed: the borrowed directory holds this checkout's editable install of the
    # same version, which pip would otherwise take as already satisfied
    inst = _run(py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                wheels[0], cwd=tmp)
    assert inst.returncode == 0, inst.stdout[-2000:] + inst.stderr[-2000:]
    assert "Successfully installed secagg-hardened" in inst.stdout, inst.stdout[-2000:]
    return {"tmp": tmp, "python": py, "secagg": env / "bin" / "secagg", "site": site}


def test_the_wheel_installs_and_its_code_is_the_wheels(built):
    where = _run(built["python"], "-c", "import secagg, dp, protocol; print(secagg.__file__); "
                 "print(dp.__file__); print(protocol.__file__)", cwd=built["tmp"])
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(built["site"]), line
    version = _run(built["secagg"], "--version", cwd=built["tmp"])
    assert version.returncode == 0 and version.stdout.startswith("secagg 0.")


def test_the_main_job_and_a_ledger_check_run_from_the_wheel(built):
    tmp = built["tmp"]
    job = _run(built["secagg"], "simulate", "--clients", "20", "--dim", "1000", "--json",
               cwd=tmp)
    assert job.returncode == 0, job.stderr[-2000:]
    assert json.loads(job.stdout)["correct"] is True
    ledger = tmp / "ledger.jsonl"
    dp_run = _run(built["secagg"], "simulate", "--clients", "12", "--dim", "64", "--rounds",
                  "2", "--epsilon", "4", "--ledger", ledger, cwd=tmp)
    assert dp_run.returncode == 0, dp_run.stderr[-2000:]
    check = _run(built["secagg"], "budget", "verify", ledger, "--json", cwd=tmp)
    assert check.returncode == 0, check.stderr[-2000:]
    doc = json.loads(check.stdout)
    assert doc["valid"] and doc["rounds"] == 2 and 0 < doc["epsilon"] <= 4
