"""The installed distribution's version, read from its metadata (one source: pyproject.toml)."""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "secagg-hardened"


def package_version() -> str:
    """The version of the installed ``secagg-hardened`` (``"not installed"`` when it runs from
    a source tree that was never installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "not installed"
