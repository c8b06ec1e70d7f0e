"""Public round constants shared in one process: cached by value, checked as strictly as ever."""

from __future__ import annotations

import os

import pytest

from protocol import RoundConfig, WireError, decode, encode
from protocol.messages import MAX_CLIENT_ID, Setup
from secagg import harary_graph
from secagg.graph import _harary


def setup(cohort, recipient=0) -> Setup:
    n = len(cohort)
    p = RoundConfig().resolve(n)
    return Setup(bytes(32), 0, recipient, cohort, p.neighbours, p.threshold, 10, 32,
                 "semi-honest", p.min_survivors, bytes(32))


@pytest.mark.parametrize("bad", [
    lambda c: c[:50] + [True] + c[51:],            # a bool among ints
    lambda c: c[:50] + [c[49]] + c[51:],           # a duplicate
    lambda c: [c[1], c[0], *c[2:]],                 # out of order
    lambda c: [-1, *c[1:]],                         # negative
    lambda c: [*c[:-1], MAX_CLIENT_ID + 1],         # too large
    lambda c: [*c[:-1], 1 << 70],                   # far too large
    lambda c: [*c[:-1], 3.0],                       # not an int
])
def test_long_cohorts_are_checked_like_short_ones(bad):
    cohort = list(range(0, 200, 2))
    with pytest.raises(WireError, match="cohort"):
        setup(bad(cohort))


def test_a_decoded_cohort_is_shared_and_equal():
    cohort = tuple(range(100))
    a, b = (decode(encode(setup(cohort, recipient=u))) for u in (3, 4))
    assert a.cohort == cohort and a.cohort is b.cohort


def test_the_shared_graph_is_the_graph():
    seed, ids = os.urandom(32), tuple(range(0, 300, 3))
    g = harary_graph(ids, 12, seed=seed)
    assert harary_graph(list(ids), 12, seed=seed).ordering == g.ordering == \
        _harary(ids, 12, seed).ordering
    assert harary_graph(ids, 12, seed=seed) is g  # computed once
    assert harary_graph(ids, 14, seed=seed).ordering == g.ordering  # same shuffle, other k
    assert harary_graph(ids, 12, seed=os.urandom(32)).ordering != g.ordering


def test_resolve_is_cached_and_still_refuses():
    config = RoundConfig()
    assert config.resolve(500) is config.resolve(500)
    from protocol import ConfigError

    with pytest.raises(ConfigError):
        config.resolve(2)
    with pytest.raises(ConfigError):
        RoundConfig(neighbours=7).resolve(100)
