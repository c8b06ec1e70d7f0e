"""Test configuration: hypothesis profiles come from pyproject.toml ([tool.secagg.hypothesis])."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]


def _register_profiles() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    profiles = config["tool"]["secagg"]["hypothesis"]["profiles"]
    for name, opts in profiles.items():
        settings.register_profile(name, suppress_health_check=[HealthCheck.too_slow], **opts)
    chosen = os.environ.get("HYPOTHESIS_PROFILE") or (
        "ci" if os.environ.get("CI", "").lower() == "true" else "default"
    )
    settings.load_profile(chosen)


_register_profiles()
