"""Hypothesis stateful test: a round driven step by step, with clients dropping at any point
and old client messages replayed to the server. Invariants: a replay never changes the server's
state; the round ends with the survivors' exact sum or a typed abort."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from protocol import (
    ClientRound,
    ConfigError,
    RemoteProtocolError,
    RoundAborted,
    RoundConfig,
    ServerRound,
    ServerState,
    decode,
    encode,
)
from secagg import SigningKey


class RoundMachine(RuleBasedStateMachine):
    @initialize(n=st.integers(5, 40), d=st.integers(1, 12), bits=st.integers(8, 64),
                mode=st.sampled_from(["semi-honest", "malicious"]), complete=st.booleans(),
                seed=st.integers(0, 2**32 - 1))
    def start(self, n, d, bits, mode, complete, seed):
        self.n, self.bits = n, bits
        rng = np.random.default_rng(seed)
        dtype = np.uint32 if bits <= 32 else np.uint64
        hi = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(2**64 - 1)
        self.inputs = (rng.integers(0, 2**63, size=(n, d), dtype=np.uint64) & hi).astype(dtype)
        ident = {u: SigningKey.generate() for u in range(n)} if mode == "malicious" else None
        reg = {u: k.verify_key for u, k in ident.items()} if ident else None
        config = RoundConfig(bits=bits, mode=mode, complete_graph=complete, dropout_rate=0.3,
                             corrupt_rate=0.0)
        self.sent: list[bytes] = []
        self.finished = False
        try:
            self.server = ServerRound(config, range(n), d, registry=reg)
        except ConfigError:  # no (k, t) for this cohort and plan (covered by test_simulate)
            assume(False)
        self.clients = {u: ClientRound(u, config=config, input=self.inputs[u].copy(),
                                       identity=ident[u] if ident else None, registry=reg,
                                       used_sessions=set() if ident else None)
                        for u in range(n)}
        self.outgoing = self.server.start()
        self.gone: set[int] = set()

    @precondition(lambda self: not self.finished)
    @rule(data=st.data())
    def drop_a_client(self, data):
        self.gone.add(data.draw(st.integers(0, self.n - 1)))

    @precondition(lambda self: not self.finished)
    @rule()
    def close_the_stage(self):
        for m in self.outgoing:
            if m.recipient in self.gone:
                continue
            try:
                replies = self.clients[m.recipient].receive(decode(encode(m)))
            except RemoteProtocolError:
                self.gone.add(m.recipient)
                continue
            for reply in replies:
                raw = encode(reply)
                self.sent.append(raw)
                self.server.receive(decode(raw))
                # a duplicate within the same stage is refused too, and changes nothing
                counts = self._counts()
                try:
                    self.server.receive(decode(raw))
                    raise AssertionError("a duplicate message was accepted")
                except RemoteProtocolError:
                    pass
                assert counts == self._counts()
        try:
            self.outgoing = self.server.close_stage()
        except RoundAborted as exc:
            assert exc.reason and self.server.state is ServerState.ABORTED
            self.finished = True
            return
        if self.server.state is ServerState.DONE:
            self.finished = True
            surv = sorted(self.server.survivors)
            assert len(surv) >= self.server.params.min_survivors
            expect = self.inputs[surv].astype(object).sum(axis=0) % (1 << self.bits)
            assert [int(v) for v in self.server.aggregate] == [int(v) for v in expect]

    def _counts(self):
        s = self.server
        acc = None if s.masked_sum is None else s.masked_sum.tobytes()
        return (len(s.keys), len(s.share_msgs), len(s.u3), len(s.signatures),
                len(s.responses), acc)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def replay_an_old_message(self, data):
        raw = data.draw(st.sampled_from(self.sent))
        acc = None if self.server.masked_sum is None else self.server.masked_sum.copy()
        counts = (len(self.server.keys), len(self.server.share_msgs), len(self.server.u3),
                  len(self.server.signatures), len(self.server.responses))
        try:
            self.server.receive(decode(raw))
            raise AssertionError("a replayed message was accepted")
        except RemoteProtocolError:
            pass
        assert counts == (len(self.server.keys), len(self.server.share_msgs),
                          len(self.server.u3), len(self.server.signatures),
                          len(self.server.responses))
        if acc is not None:
            assert np.array_equal(acc, self.server.masked_sum)

    @invariant()
    def running_sum_stays_in_the_ring(self):
        acc = getattr(getattr(self, "server", None), "acc", None)
        if acc is not None and self.bits < 64:
            assert int(acc.max(initial=0)) < 1 << self.bits


TestRound = RoundMachine.TestCase
TestRound.settings = settings(max_examples=30, stateful_step_count=12, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.filter_too_much])
