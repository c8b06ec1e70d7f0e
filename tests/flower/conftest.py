"""Fixtures of the Flower tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def flower_root(tmp_path) -> Path:
    return tmp_path / "nodes"
