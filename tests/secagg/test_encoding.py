"""Canonical encoding: injective, typed, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secagg import EncodingError, SecAggTypeError
from secagg.encoding import canonical

fields = st.lists(st.one_of(st.binary(max_size=20), st.text(max_size=10),
                            st.integers(0, 2**64 - 1)), max_size=6)


@given(fields, fields)
def test_injective(a, b):
    if a != b or [type(x) for x in a] != [type(x) for x in b]:
        assert canonical(*a) != canonical(*b)
    else:
        assert canonical(*a) == canonical(*b)


def test_no_concatenation_ambiguity():
    assert canonical("ab", "c") != canonical("a", "bc")
    assert canonical(b"1") != canonical("1") != canonical(1)


def test_rejects():
    with pytest.raises(EncodingError):
        canonical(-1)
    with pytest.raises(EncodingError):
        canonical(2**64)
    with pytest.raises(SecAggTypeError):
        canonical(True)
    with pytest.raises(SecAggTypeError):
        canonical(1.5)
    with pytest.raises(EncodingError):
        canonical(*([1] * 65))
    with pytest.raises(EncodingError):
        canonical(bytes((1 << 20) + 1))
