"""The reference client of examples/reference_client.py (written from docs/protocol.md, with
no import of protocol's client or server) run as a stdin/stdout program through the client
suite: it refuses the same attacks as ClientRound, so the specification is enough to build a
conforming client."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from protocol.conformance import ProgramClient, run_client_suite

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = [sys.executable, str(ROOT / "examples" / "reference_client.py")]

#: A case of every stage and kind: controls, a downgrade, replays, ciphertext attacks, the
#: alive-and-dead request and the split view.
SAMPLE = ["honest-round", "dropout-after-share-keys", "downgrade-to-semi-honest",
          "replayed-session", "low-order-mask-key", "reflected-ciphertext",
          "neighbour-alive-and-dead", "split-view-signatures-over-another-set",
          "second-unmasking-request"]


def test_the_reference_client_passes_a_case_of_every_stage_in_both_modes():
    results = run_client_suite(ProgramClient(REFERENCE, timeout=30), cases=SAMPLE)
    assert len(results) > len(SAMPLE)
    assert [r for r in results if not r.passed] == []


@pytest.mark.slow
def test_the_reference_client_passes_every_case():
    results = run_client_suite(ProgramClient(REFERENCE, timeout=30))
    assert [r for r in results if not r.passed] == []
