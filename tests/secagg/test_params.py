"""Parameter finder: its (k, t) meet the inequalities, checked by an independent float path."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import GraphParameterError, analyse_parameters, find_parameters


def log_hyper_tail_ge(N, K, k, a):
    """log P[X >= a], X ~ Hypergeometric(N, K, k), by lgamma (independent of the exact path)."""
    def lcomb(n, r):
        return math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)
    terms = [lcomb(K, j) + lcomb(N - K, k - j) - lcomb(N, k)
             for j in range(max(a, 0, k - (N - K)), min(k, K) + 1)]
    if not terms:
        return -math.inf
    m = max(terms)
    return m + math.log(sum(math.exp(t - m) for t in terms))


def check_independently(n, k, t, dropout, corrupt, mode):
    A = math.ceil(round(corrupt * n, 9))
    D = math.ceil(round(dropout * n, 9))
    ln2 = math.log(2)
    a = t if mode == "semi-honest" else 2 * t - k
    exposure = math.log(n) + log_hyper_tail_ge(n - 1, A, k, a)
    assert exposure <= -41 * ln2 + 1e-9
    S = n - D - 1
    # P[Y < t] = 1 - P[Y >= t]; compute the lower tail directly: P[Y <= t-1] = P[k-Y >= k-t+1]
    failure = math.log(n) + log_hyper_tail_ge(n - 1, n - 1 - S, k, k - t + 1)
    assert failure <= -20 * ln2 + 1e-9
    if k < n - 1:
        pairs = math.log(n * (n - k - 1) / 2)
        if mode == "semi-honest":
            # both runs (k positions) inside the random bad set of size A + D
            disc = pairs + log_hyper_tail_ge(n, A + D, k, k)
        else:
            # the server drops up to D of its choice: the runs need k - D corrupted clients
            assert k > D
            disc = pairs + log_hyper_tail_ge(n, A, k, k - D)
        assert disc <= -41 * ln2 + 1e-9


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 3000), dropout=st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.3]),
       corrupt=st.sampled_from([0.0, 0.01, 0.05, 0.1]),
       mode=st.sampled_from(["semi-honest", "malicious"]))
def test_found_parameters_meet_their_inequalities(n, dropout, corrupt, mode):
    try:
        p = find_parameters(n, dropout_rate=dropout, corrupt_rate=corrupt, mode=mode)
    except GraphParameterError:
        return  # infeasible for this cohort: tested separately
    assert p.k % 2 == 0 or p.complete
    assert 2 <= p.t <= p.k <= n - 1
    assert p.analysis.secure() and p.analysis.correct()
    check_independently(n, p.k, p.t, dropout, corrupt, mode)
    if not p.complete and p.k > 2:
        # minimality: no smaller even degree has a valid threshold
        smaller = analyse_parameters(n, p.k - 2, min(p.t, p.k - 2), dropout_rate=dropout,
                                     corrupt_rate=corrupt, mode=mode)
        lo_ok = any(
            analyse_parameters(n, p.k - 2, t, dropout_rate=dropout, corrupt_rate=corrupt,
                               mode=mode).secure()
            and analyse_parameters(n, p.k - 2, t, dropout_rate=dropout, corrupt_rate=corrupt,
                                   mode=mode).correct()
            for t in range(2, p.k - 1))
        assert not lo_ok, smaller


def test_reference_points():
    p = find_parameters(1000, dropout_rate=0.1, corrupt_rate=0.05)
    assert (p.k, p.t) == (36, 19) and not p.complete
    assert p.analysis.log2_exposure <= -41 and p.analysis.log2_failure <= -20
    m = find_parameters(1000, dropout_rate=0.1, corrupt_rate=0.05, mode="malicious")
    assert m.k > p.k and 2 * m.t > m.k  # malicious needs 2t > k + corrupted neighbours


def split_ring_by_dropping_two_runs(n, k, seed):
    """The adaptive attack: drop two runs of k/2 in the public ordering; return the size of
    the honest survivors' component containing the first survivor, and the survivor count."""
    from secagg import harary_graph

    g = harary_graph(range(n), k, seed=seed)
    o, h = g.ordering, k // 2
    dropped = set(o[:h]) | set(o[n // 2:n // 2 + h])
    alive = [u for u in range(n) if u not in dropped]
    comp, stack = {alive[0]}, [alive[0]]
    while stack:
        u = stack.pop()
        for v in g.neighbours(u) - dropped - comp:
            comp.add(v)
            stack.append(v)
    return len(comp), len(alive)


def test_malicious_server_choosing_dropouts_cannot_split_the_survivors():
    n = 1000
    D = 100
    # The degree the semi-honest analysis would accept for malicious mode: two adversarial
    # runs of k/2 <= D/2 dropouts split the honest survivors (partial sums would leak).
    weak = analyse_parameters(n, 78, 52, dropout_rate=0.1, corrupt_rate=0.05, mode="malicious")
    assert not weak.secure() and weak.log2_disconnect == 0.0
    comp, alive = split_ring_by_dropping_two_runs(n, 78, bytes(32))
    assert comp < alive  # the attack is real at k = 78
    p = find_parameters(n, dropout_rate=0.1, corrupt_rate=0.05, mode="malicious")
    assert p.k > D and p.analysis.secure()
    comp, alive = split_ring_by_dropping_two_runs(n, p.k, bytes(32))
    assert p.k // 2 * 2 > D  # the attacker cannot afford two runs of k/2 dropouts
    # semi-honest dropouts are not chosen against the graph: the small degree stays valid
    assert find_parameters(n, dropout_rate=0.1, corrupt_rate=0.05).k == 36


def test_small_cohorts_use_complete_graph_and_complete_on_request():
    p = find_parameters(5, dropout_rate=0.2, corrupt_rate=0.0)
    assert p.complete and p.k == 4
    q = find_parameters(200, dropout_rate=0.1, corrupt_rate=0.05, complete=True)
    assert q.complete and q.k == 199
    # worst case for the complete graph: t > A and t <= n - D - 1
    assert q.t > 10 and q.t <= 200 - 20 - 1
    qm = find_parameters(200, dropout_rate=0.1, corrupt_rate=0.05, mode="malicious",
                         complete=True)
    assert 2 * qm.t > 199 + 10


def test_analysis_flags_insecure_choices():
    bad = analyse_parameters(1000, 36, 3, dropout_rate=0.1, corrupt_rate=0.05)
    assert not bad.secure()
    fragile = analyse_parameters(1000, 36, 34, dropout_rate=0.1, corrupt_rate=0.05)
    assert fragile.secure() and not fragile.correct()


@pytest.mark.parametrize("kwargs,match", [
    (dict(n=2, dropout_rate=0.1, corrupt_rate=0.0), "cohort size"),
    (dict(n=100, dropout_rate=1.0, corrupt_rate=0.0), r"\[0, 1\)"),
    (dict(n=100, dropout_rate=0.1, corrupt_rate=-0.1), r"\[0, 1\)"),
    (dict(n=100, dropout_rate=0.6, corrupt_rate=0.4), "no honest survivor"),
    (dict(n=100, dropout_rate=0.1, corrupt_rate=0.0, mode="byzantine"), "unknown mode"),
    (dict(n=10, dropout_rate=0.5, corrupt_rate=0.4), "no \\(k, t\\)"),
    (dict(n=100, dropout_rate=float("nan"), corrupt_rate=0.0), "finite"),
    (dict(n=100, dropout_rate=0.1, corrupt_rate=float("inf")), "finite"),
    (dict(n=100, dropout_rate=0.1, corrupt_rate=0.0, security_bits=0), "security_bits"),
    (dict(n=100, dropout_rate=0.1, corrupt_rate=0.0, failure_bits=-3), "failure_bits"),
    (dict(n=100, dropout_rate=0.1, corrupt_rate=0.0, security_bits=257), "security_bits"),
    (dict(n=200_000, dropout_rate=0.1, corrupt_rate=0.0), "cohort size"),
])
def test_refusals(kwargs, match):
    with pytest.raises(GraphParameterError, match=match):
        find_parameters(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(security_bits=40.0), dict(security_bits=True), dict(complete="no"),
    dict(dropout_rate="0.1"), dict(dropout_rate=True),
])
def test_type_refusals(kwargs):
    from secagg import SecAggTypeError

    args = dict(dropout_rate=0.1, corrupt_rate=0.0) | kwargs
    with pytest.raises(SecAggTypeError):
        find_parameters(100, **args)


def test_analyse_refusals():
    with pytest.raises(GraphParameterError, match="even"):
        analyse_parameters(100, 5, 3, dropout_rate=0.1, corrupt_rate=0.0)
    with pytest.raises(GraphParameterError, match="threshold"):
        analyse_parameters(100, 6, 7, dropout_rate=0.1, corrupt_rate=0.0)
