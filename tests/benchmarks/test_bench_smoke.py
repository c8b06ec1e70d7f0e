"""The benchmark script runs and emits well-formed rows (no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_masking_json_rows():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_masking.py"), "--json",
         "--dims", "1000", "--repeat", "1"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    masks = [r for r in rows if r["bench"] == "mask"]
    assert sorted(r["k"] for r in masks) == [8, 32]
    for r in masks:
        assert r["d"] == 1000 and r["mask_s"] > 0 and r["floor_s"] > 0 and r["ratio"] > 0
        assert r["peak_mem_x_vector"] > 0
    shamir = [r for r in rows if r["bench"] == "shamir"]
    assert len(shamir) == 1 and shamir[0]["neighbours"] == 100 and shamir[0]["threshold"] == 51


def test_bench_noise_json_rows():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_noise.py"), "--json",
         "--samples", "20000", "--repeat", "1", "--dims", "1000"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    samplers = [r for r in rows if r["bench"] == "sampler"]
    assert {r["mechanism"] for r in samplers} == {"skellam", "discrete-gaussian"}
    for r in samplers:
        assert r["samples"] == 20000 and r["msamples_per_s"] > 0 and r["floor_s"] > 0
        assert r["tv_per_sample"] < 1e-30
    enc = [r for r in rows if r["bench"] == "encode"]
    assert len(enc) == 1 and enc[0]["d"] == 1000 and enc[0]["padded_d"] == 1024


@pytest.mark.timeout(180)
def test_bench_network_json_rows():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_network.py"), "--json",
         "--clients", "8", "--dims", "100", "--repeat", "1", "--workers", "2"],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=170,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1
    r = rows[0]
    assert r["n"] == 8 and r["d"] == 100 and r["correct"] is True
    assert r["survivors"] == r["sim_survivors"] and 6 <= r["survivors"] <= 8
    assert set(r["stages_s"]) == {"advertise_keys", "share_keys", "masked_input", "unmasking"}
    assert r["round_s"] > 0 and r["simulation_s"] > 0 and r["server_peak_mib"] > 0
    assert r["sent_per_client"] > r["plain_upload_bytes"]
