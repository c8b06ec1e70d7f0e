"""SeededInputs: per-client inputs made from a public seed, and the sum checked row by row."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ProtocolError, RoundConfig, SeededInputs, simulate_round


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(8, 64), dim=st.integers(1, 300), seed=st.integers(0, 2**63 - 1),
       rows=st.lists(st.integers(0, 9), max_size=10))
def test_rows_are_ring_elements_and_sum_of_is_their_ring_sum(bits, dim, seed, rows):
    inputs = SeededInputs(10, dim, bits, seed)
    for u in set(rows):
        r = inputs.row(u)
        assert r.dtype == inputs.dtype and r.shape == (dim,)
        assert np.array_equal(r, inputs.row(u))  # the same row every time
        if bits < 64:
            assert int(r.max()) < 1 << bits
    exact = sum((inputs.row(u).astype(object) for u in rows), np.zeros(dim, dtype=object))
    expected = np.array([int(v) % (1 << bits) for v in exact], dtype=inputs.dtype)
    assert np.array_equal(inputs.sum_of(rows), expected)


def test_rows_differ_between_clients_and_seeds():
    a, b = SeededInputs(5, 64, 32, 1), SeededInputs(5, 64, 32, 2)
    assert not np.array_equal(a.row(0), a.row(1))
    assert not np.array_equal(a.row(0), b.row(0))


def test_top_bits_are_used_for_narrow_rings():
    r = SeededInputs(3, 20_000, 8, 0).row(0)
    assert r.max() == 255 and r.min() == 0  # every value of the ring occurs


@pytest.mark.parametrize("kwargs", [dict(clients=2), dict(dim=0), dict(bits=7), dict(bits=65),
                                    dict(seed=-1), dict(clients=True), dict(dim=1.5)])
def test_bad_arguments_are_typed_errors(kwargs):
    base = dict(clients=4, dim=3, bits=32, seed=0)
    with pytest.raises(ProtocolError):
        SeededInputs(**{**base, **kwargs})


@pytest.mark.parametrize("u", [-1, 4, True, "0"])
def test_unknown_client_is_refused(u):
    with pytest.raises(ProtocolError, match="no client"):
        SeededInputs(4, 3, 32, 0).row(u)


def test_simulate_round_over_seeded_inputs_and_its_bit_width_check():
    inputs = SeededInputs(12, 40, 20, seed=9)
    result = simulate_round(inputs, RoundConfig(bits=20), {"masked_input": {3}}, seed=1)
    assert np.array_equal(result.aggregate, inputs.sum_of(sorted(result.survivors)))
    assert result.server_retained_peak >= 40 * 4
    with pytest.raises(ProtocolError, match="20 bits for a 32-bit round"):
        simulate_round(inputs, RoundConfig(bits=32))
