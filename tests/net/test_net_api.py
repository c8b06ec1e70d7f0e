"""The training-loop API (:class:`SecAggClient`) against a real server process: connect, then
per round hand over a torch model delta and get back the published aggregate."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from net_harness import make_deployment

from protocol.net import ConnectionLost, RoundFailed, SecAggClient, load_client

pytestmark = pytest.mark.timeout(180)
torch = pytest.importorskip("torch")


@pytest.fixture
def deployment(tmp_path):
    d = make_deployment(tmp_path, 4, dp=True, rounds=2, dim=10)
    yield d
    d.stop()


def _delta(u: int) -> dict:
    g = torch.Generator().manual_seed(u)
    return {"w": torch.randn(2, 4, generator=g) * 0.1, "b": torch.randn(2, generator=g) * 0.1}


def test_training_loop_gets_each_rounds_aggregate_in_its_own_structure(deployment):
    d = deployment
    srv = d.server()
    d.wait_for(lambda: d.events("listening") or srv.poll() is not None, 30, "listening")
    clients = [SecAggClient(d.dir / f"client-{u}.toml") for u in range(4)]

    def loop(c: SecAggClient, u: int):
        with c:
            out = []
            for _ in range(2):
                out.append(c.round(_delta(u), timeout=120))
            with pytest.raises((ConnectionLost, RoundFailed, TimeoutError)):
                c.round(_delta(u), timeout=20)  # the server ran its 2 rounds and said bye
            return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(loop, clients, range(4)))
    assert d.wait_server() == 0
    truth = {k: sum(_delta(u)[k].numpy() for u in range(4)) for k in ("w", "b")}
    for per_client in results:
        assert [r.round for r in per_client] == [0, 1]
        for r in per_client:
            assert r.included and r.survivors == (0, 1, 2, 3)
            assert set(r.update) == {"w", "b"}
            assert r.update["w"].shape == (2, 4) and r.update["b"].shape == (2,)
            # the same published aggregate reaches every client
            np.testing.assert_array_equal(r.aggregate, results[0][r.round].aggregate)
            # DP noise of ~1 per coordinate around the true sum (sum of 4 deltas)
            err = np.concatenate([(r.update[k] - truth[k]).ravel() for k in truth])
            assert np.sqrt(np.mean(err**2)) < 20
    agg = np.load(d.dir / "state" / "aggregates" / "round-1.npy")
    np.testing.assert_array_equal(agg, results[0][1].aggregate)


def test_bad_update_is_refused_before_anything_leaves(deployment):
    d = deployment
    srv = d.server()
    d.wait_for(lambda: d.events("listening") or srv.poll() is not None, 30, "listening")
    good = [SecAggClient(d.dir / f"client-{u}.toml") for u in range(1, 4)]
    bad = SecAggClient(load_client(d.dir / "client-0.toml"))

    def run_good(c, u):
        with c:
            return c.round(_delta(u), timeout=120)

    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(run_good, c, u) for c, u in zip(good, range(1, 4), strict=True)]
        with bad:
            nan = _delta(0)
            nan["w"][0, 0] = float("nan")
            with pytest.raises(RoundFailed, match="NaN"):
                bad.round(nan, timeout=120)
        res = [f.result() for f in futs]
    assert all(r.survivors == (1, 2, 3) for r in res)
    # client 0 was not charged: nothing left it
    from dp.ledger import verify

    assert verify(d.dir / "state" / "client-0" / "ledger.jsonl").entries == 0
