"""A lying server workflow and a tampered node store, against hardened_secagg_mod.

Each attack is made on the in-process Grid by rewriting what the server sends (or what the
node keeps between messages); the node refuses with a typed error, its reply carries no frame
(the server learns nothing of its secrets), and the honest part of the round goes on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flower_nodes import make_grid, node_id
from inprocess_grid import run_rounds

from protocol import RoundConfig
from protocol.flower import HardenedSecAggWorkflow
from protocol.flower.records import FRAME_RECORD, STATE_RECORD, put_frame, take_frame
from protocol.messages import Setup, UnmaskRequest
from protocol.wire import decode, encode

N = 6


def rewriting(kind, change):
    """A rewrite hook replacing every message of ``kind`` by ``change(message)``."""

    def hook(msg):
        try:
            frame, meta = take_frame(msg.content)
        except Exception:  # noqa: BLE001 - not one of ours (identify)
            return msg
        m = decode(frame)
        if isinstance(m, kind):
            new = change(m)
            if new is not None:
                put_frame(msg.content, encode(new), stage=meta["stage"],
                          **{k: v for k, v in meta.items() if k not in ("v", "stage")})
        return msg

    return hook


def errors_of(grid, node):
    return [r for r in grid.received if r.metadata.src_node_id == node and r.has_error()]


def test_a_survivor_listed_alive_and_dead_is_refused_and_nothing_is_revealed(flower_root):
    grid = make_grid(flower_root, N)
    target = node_id(0)

    def both(m: UnmaskRequest):
        if m.recipient != 0 or not m.alive:
            return None
        v = next(u for u in m.alive if u != 0)
        return dataclasses.replace(m, dead=tuple(sorted({*m.dead, v})))

    grid.rewrite = rewriting(UnmaskRequest, both)
    reports, _ = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3), 1)
    (err,) = errors_of(grid, target)
    assert "both alive and dead" in err.error.reason
    answered = [r for r in grid.received if r.metadata.src_node_id == target
                and not r.has_error()]
    assert len(answered) == 3  # AdvertiseKeys, ShareKeys, MaskedInput: no unmasking shares
    assert "unmasking" in reports[0].dropped[target]


def test_a_replayed_setup_is_refused_across_processes(flower_root):
    grid = make_grid(flower_root, N)
    first: dict[int, Setup] = {}

    def replay(m: Setup):
        if m.round == 1:
            first[m.recipient] = m
            return None
        return first.get(m.recipient) if m.recipient == 2 else None

    grid.rewrite = rewriting(Setup, replay)
    reports, models = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(),
                                                              timeout=0.3), 2)
    (err,) = errors_of(grid, node_id(2))
    assert "replayed session" in err.error.reason
    assert reports[1].abort is None and node_id(2) in reports[1].dropped


def test_a_weaker_configuration_is_refused(flower_root):
    grid = make_grid(flower_root, N)
    grid.rewrite = rewriting(Setup, lambda m: dataclasses.replace(m, threshold=1))
    reports, models = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(),
                                                              timeout=0.3), 1)
    for p in range(N):
        (err,) = errors_of(grid, node_id(p))
        assert "differ from this client's configuration" in err.error.reason
    assert reports[0].abort is not None
    assert np.array_equal(models[0], models[1])


def test_a_plaintext_fit_request_is_refused_and_no_parameters_leave(flower_root):
    from flwr.server.workflow import DefaultWorkflow  # Flower's plain FedAvg fit

    grid = make_grid(flower_root, N)

    class Plain:
        last = None

        def __call__(self, g, c):
            DefaultWorkflow().fit_workflow(g, c)

    run_rounds(grid, Plain(), 1)
    assert grid.received and all(r.has_error() for r in grid.received)
    assert all("not a hardened secure-aggregation message" in r.error.reason
               for r in grid.received)


def test_a_tampered_kept_state_is_refused(flower_root):
    grid = make_grid(flower_root, N)
    target = node_id(1)

    def flip(node, msg, state):
        if node == target and STATE_RECORD in state.config_records:
            blob = bytearray(state.config_records[STATE_RECORD]["blob"])
            blob[-1] ^= 1
            state.config_records[STATE_RECORD]["blob"] = bytes(blob)

    grid.tamper = flip
    reports, _ = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3), 1)
    (err,) = errors_of(grid, target)
    assert "StateTampered" in err.error.reason or "authenticate" in err.error.reason
    assert reports[0].abort is None


def test_a_kept_state_of_another_node_is_refused(flower_root):
    grid = make_grid(flower_root, N)
    a, b = node_id(1), node_id(2)

    def swap(node, msg, state):
        if node == a and STATE_RECORD in state.config_records:
            state.config_records[STATE_RECORD] = grid.contexts[b].state.config_records[
                STATE_RECORD]

    grid.tamper = swap
    reports, _ = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3), 1)
    (err,) = errors_of(grid, a)
    assert "another node's key" in err.error.reason
    assert reports[0].abort is None


def test_a_rollback_of_the_kept_state_is_refused(flower_root):
    grid = make_grid(flower_root, N)
    target, kept = node_id(3), []

    def roll(node, msg, state):
        if node != target or STATE_RECORD not in state.config_records:
            return
        kept.append(state.config_records[STATE_RECORD])
        if len(kept) == 3:  # before unmasking: put back the blob kept after AdvertiseKeys
            state.config_records[STATE_RECORD] = kept[0]

    grid.tamper = roll
    reports, _ = run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3), 1)
    (err,) = errors_of(grid, target)
    assert "rollback" in err.error.reason
    assert reports[0].abort is None


def test_a_frame_for_another_client_is_refused(flower_root):
    grid = make_grid(flower_root, N)

    def readdress(m: UnmaskRequest):
        return dataclasses.replace(m, recipient=5) if m.recipient == 4 else None

    grid.rewrite = rewriting(UnmaskRequest, readdress)
    run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=0.3), 1)
    (err,) = errors_of(grid, node_id(4))
    assert "client state of client 4, not 5" in err.error.reason
    assert not any(FRAME_RECORD in r.content.array_records for r in errors_of(grid, node_id(4))
                   if r.has_content())


def test_a_stage_message_sent_twice_at_once_is_answered_once(flower_root, monkeypatch):
    """Two processes handling one SharesDelivery at the same time (Flower starts one per
    message) would mask two inputs under the same masks: their difference is the update. The
    node's lock and the blob consumed on opening let exactly one through."""
    import copy
    import threading
    import time

    import flower_apps
    from flwr.app import Context

    fit = flower_apps.KnownClient.fit

    def slow_fit(self, parameters, config):
        time.sleep(0.5)
        return fit(self, parameters, config)

    monkeypatch.setattr(flower_apps.KnownClient, "fit", slow_fit)
    grid = make_grid(flower_root, N)
    target, twins = node_id(2), []

    def twice(node, msg, state):
        meta = msg.content.config_records.get("secagg.meta")
        if node != target or meta is None or meta.get("stage") != "masked_input":
            return
        ctx = grid.contexts[node]
        twin = Context(run_id=7, node_id=node, node_config=dict(ctx.node_config),
                       state=copy.deepcopy(state), run_config={})

        def run():
            try:
                twins.append(grid.apps[node](msg, twin))
            except Exception as exc:  # noqa: BLE001 - the refusal is what we look for
                twins.append(exc)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.1)  # the twin is inside its training when the message is handled again
        twins.append(t)

    grid.tamper = twice
    run_rounds(grid, HardenedSecAggWorkflow(config=RoundConfig(), timeout=5.0), 1)
    thread = next(x for x in twins if isinstance(x, threading.Thread))
    thread.join()
    answers = [x for x in twins if not isinstance(x, threading.Thread)]
    answers += [r for r in grid.received if r.metadata.src_node_id == target]
    masked = [a for a in answers if not isinstance(a, Exception) and not a.has_error()
              and "masked_input" == a.content.config_records["secagg.meta"]["stage"]]
    assert len(masked) == 1
