"""The server side in Flower: a fit workflow, used where Flower's ``SecAggPlusWorkflow`` is.

``DefaultWorkflow(fit_workflow=HardenedSecAggWorkflow(config=RoundConfig(...), dp=...))``.
One call runs one fit round: the strategy samples the nodes (``configure_fit``), the workflow
numbers them (semi-honest: in the order of their node ids; malicious: by the client id each
node is registered under), and our :class:`~protocol.server.ServerRound` runs through the
shared :class:`~protocol.driver.RoundDriver` with Flower's Grid as the host: one Flower Message
round trip per stage per node, the message's TTL the stage's deadline, and replies that come
after a stage closed never pulled. docs/architecture.md section 4.

The survivors' sum is decoded (the mean of their model deltas, weighted by their example
counts when the encoding is weighted, as FedAvg weighs them), added to the global model, and
handed to ``strategy.aggregate_fit`` the way Flower's own workflow hands its aggregate: every
survivor's FitRes carries the same aggregated parameters. A typed abort ends the round with an
ERROR line in Flower's log and the global model unchanged; the next round runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from logging import ERROR, INFO, WARNING
from pathlib import Path
from typing import cast

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.supercore import log

from dp.errors import DPError, UpdateError
from dp.ledger import Ledger, open_ledger

from ..config import ConfigError, Mode, RoundConfig
from ..dp_plan import DPConfig, DPServer, plan_dp
from ..driver import Drop, DropReason, Host, RoundDriver, StageRun
from ..errors import AbortReason, RemoteProtocolError, RoundAborted, WireError
from ..messages import SharesDelivery
from ..real_sum import SumConfig, finish_sum, plan_sum
from ..server import ServerRound
from ..transitions import Stage
from ..wire import decode, encode
from .records import IDENTIFY, meta_int, put_frame, put_meta, take_frame, take_meta
from .settings import FlowerRegistry

MIN_COHORT = 3  # the smallest cohort a round runs with (protocol.config)
DEFAULT_TIMEOUT = 60.0  # seconds per stage; must exceed the engine's cold start
POLL = 0.05  # seconds between pulls of replies


class HardenedSecAggWorkflow:
    """A Flower fit workflow running hardened secure aggregation (see the module docstring).

    ``config`` is the round configuration (the nodes pin their own copy and refuse another);
    ``dp`` a DPConfig for distributed DP, or None for a secure sum encoded with ``sum``;
    ``timeout`` the deadline of every stage in seconds, or a mapping from stage name to
    seconds; ``ledger`` the server's privacy ledger (a path or an open Ledger; DP only);
    ``registry`` malicious mode's client ids and Ed25519 identities.
    Raises TypeError or ValueError for an argument no round can run with.
    """

    def __init__(self, *, config: RoundConfig, dp: DPConfig | None = None,
                 sum: SumConfig | None = None,  # noqa: A002 - the encoding of a secure sum
                 timeout: float | Mapping[str, float] = DEFAULT_TIMEOUT,
                 ledger: Ledger | str | Path | None = None,
                 registry: FlowerRegistry | None = None) -> None:
        if not isinstance(config, RoundConfig):
            raise TypeError("config must be a RoundConfig")
        if dp is not None and not isinstance(dp, DPConfig):
            raise TypeError("dp must be a DPConfig or None")
        if dp is not None and sum is not None:
            raise ValueError("a DP round is encoded by its DPConfig: give dp or sum, not both")
        if dp is None and ledger is not None:
            raise ValueError("a privacy ledger records DP rounds: give dp with a ledger")
        if config.mode == Mode.MALICIOUS and registry is None:
            raise ValueError("malicious mode needs the registry of client identities")
        self.config, self.dp, self.sum = config, dp, sum if sum is not None else SumConfig()
        self.registry = registry
        self.deadlines = _deadlines(timeout)
        self._ledger_arg = ledger
        self._ledger: Ledger | None = None
        self.last: RoundReport | None = None  # what the last call did (for callers and tests)

    # -- one fit round --------------------------------------------------------------------
    def __call__(self, grid, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        self.last = None
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        rnd = cast(int, cfg[WorkflowKey.CURRENT_ROUND])
        params = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        chosen = context.strategy.configure_fit(rnd, params, context.client_manager)
        if not chosen:
            log(INFO, "configure_fit: no clients selected, cancel")
            return
        log(INFO, "configure_fit: strategy sampled %s clients (out of %s)", len(chosen),
            context.client_manager.num_available())
        fitins = {proxy.node_id: compat.fitins_to_recorddict(ins, True)
                  for proxy, ins in chosen}
        proxies = {proxy.node_id: proxy for proxy, _ in chosen}
        base = parameters_to_ndarrays(params)
        report = RoundReport(rnd)
        self.last = report
        t0 = time.perf_counter()
        try:
            update = self._run(grid, rnd, fitins, base, report)
        except (RoundAborted, DPError, RemoteProtocolError) as exc:
            report.abort = exc
            log(ERROR, "hardened secure aggregation: round %s aborted: %s", rnd, exc)
            return
        finally:
            report.seconds = time.perf_counter() - t0
        if not np.all(np.isfinite(update)):
            # the weighted mean's decoded weight sum was not positive (the noise outweighed
            # the weights): nothing sound can be applied
            report.abort = UpdateError("the decoded update is not finite (decoded weight sum "
                                       "not positive); the global model is left unchanged")
            log(ERROR, "hardened secure aggregation: round %s not applied: %s", rnd,
                report.abort)
            return
        new = [(np.asarray(b, np.float64) + u).astype(np.asarray(b).dtype)
               for b, u in zip(base, _unflatten(update, base), strict=True)]
        parameters = ndarrays_to_parameters(new)
        results = [(proxies[n], FitRes(Status(Code.OK, ""), parameters, 1, {}))
                   for n in sorted(report.survivor_nodes)]
        failures = [RuntimeError(f"node {n}: {d}") for n, d in sorted(report.dropped.items())]
        log(INFO, "aggregate_fit: received %s results and %s failures", len(results),
            len(failures))
        aggregated, metrics = context.strategy.aggregate_fit(rnd, results, failures)
        if aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=rnd, metrics=metrics)

    def _run(self, grid, rnd: int, fitins: dict[int, RecordDict], base: list[np.ndarray],
             report: RoundReport) -> np.ndarray:
        dim = sum(int(np.asarray(a).size) for a in base)
        host = _GridHost(grid, rnd, self.deadlines, report)
        node_of = self._number(host, sorted(fitins))
        n = len(node_of)
        if n < MIN_COHORT:
            raise RoundAborted(Stage.ADVERTISE_KEYS, AbortReason.COHORT_TOO_SMALL,
                               f"{n} nodes can take part, at least {MIN_COHORT} are needed")
        try:
            self.config.resolve(n)
        except ConfigError as exc:
            raise RoundAborted(Stage.ADVERTISE_KEYS, AbortReason.COHORT_TOO_SMALL,
                               f"{n} nodes: {exc}") from None
        rc, registry = self.config, None
        if self.config.mode == Mode.MALICIOUS:
            registry = {u: self.registry.keys[u] for u in node_of}
        dp_server = None
        if self.dp is not None:
            plan = plan_dp(self.dp, rc, n, dim)
            rc, words = plan.round_config, plan.encoding.padded_dim
            dp_server = DPServer(plan, self._open_ledger())
            dp_server.check_budget()
        else:
            plan = plan_sum(self.sum, rc, n, dim)
            words = plan.encoding.padded_dim
        server = ServerRound(rc, sorted(node_of), words, round=rnd, registry=registry)
        host.bind(node_of, fitins, dim, dp_server, server)
        RoundDriver(server, host).run()
        report.survivor_nodes = {node_of[u] for u in server.survivors}
        if dp_server is not None:
            v = dp_server.finish(server.aggregate, session_id=server.session_id, round=rnd)
        else:
            v = finish_sum(plan, server.aggregate, session_id=server.session_id, round=rnd)
        # a weighted encoding decodes to the weighted mean, an unweighted one to the sum
        return v if plan.config.weighted else v / len(server.survivors)

    def _number(self, host: _GridHost, nodes: list[int]) -> dict[int, int]:
        """client id -> node id for the sampled nodes."""
        if self.config.mode != Mode.MALICIOUS:
            return dict(enumerate(nodes))
        claimed = host.identify(nodes)
        claimants: dict[int, list[int]] = {}
        for node, cid in claimed.items():
            claimants.setdefault(cid, []).append(node)
        node_of: dict[int, int] = {}
        for cid, those in sorted(claimants.items()):
            pinned = self.registry.nodes.get(cid)
            for node in sorted(those):
                why = None
                if cid not in self.registry.keys:
                    why = f"claims client id {cid}, which is not registered"
                elif pinned is not None and pinned != node:
                    why = f"claims client id {cid}, registered to node {pinned}"
                elif pinned is None and len(those) > 1:  # no one can tell which is honest
                    why = f"claims client id {cid}, claimed by {len(those)} nodes"
                if why is not None:
                    host.report.dropped[node] = why
                    log(WARNING, "hardened secure aggregation: node %s %s", node, why)
                else:
                    node_of[cid] = node
        return node_of

    def close(self) -> None:
        """Close the server's ledger if this workflow opened it (it reopens on the next
        round)."""
        if self._ledger is not None and self._ledger is not self._ledger_arg:
            self._ledger.close()
        self._ledger = None

    def _open_ledger(self) -> Ledger | None:
        if self._ledger is None and self._ledger_arg is not None:
            arg = self._ledger_arg
            self._ledger = arg if isinstance(arg, Ledger) else open_ledger(
                arg, self.dp.budget, owner="server")
        return self._ledger


class RoundReport:
    """What one call of the workflow did: survivors, drops by node, abort, time, bytes."""

    def __init__(self, round: int) -> None:
        self.round = round
        self.survivor_nodes: set[int] = set()
        self.dropped: dict[int, str] = {}  # node id -> why
        self.abort: Exception | None = None
        self.seconds = 0.0
        self.bytes_out: dict[int, int] = {}  # node id -> bytes of our frames sent to it
        self.bytes_in: dict[int, int] = {}  # node id -> bytes of our frames received from it
        self.stage_seconds: dict[str, float] = {}


class _GridHost(Host):
    """The driver's host over a Flower Grid: push a stage's messages, pull replies until all
    answered or the deadline, never pull a closed stage's replies again."""

    def __init__(self, grid, rnd: int, deadlines: dict[str, float],
                 report: RoundReport) -> None:
        self.grid, self.rnd, self.deadlines, self.report = grid, rnd, deadlines, report
        self._pending: dict[str, int] = {}  # message id -> client id
        self._deadline = 0.0

    def bind(self, node_of: dict[int, int], fitins: dict[int, RecordDict], update_dim: int,
             dp_server: DPServer | None, server: ServerRound) -> None:
        self.node_of, self.fitins, self.update_dim = node_of, fitins, update_dim
        self.client_of = {n: u for u, n in node_of.items()}
        self.dp_server, self.server = dp_server, server

    def identify(self, nodes: list[int]) -> dict[int, int]:
        """Malicious mode: node id -> the client id it says it is registered under (proved
        later by its signatures)."""
        ttl = self.deadlines[str(Stage.ADVERTISE_KEYS)]
        msgs = [Message(put_meta(RecordDict(), stage=IDENTIFY), dst_node_id=n,
                        message_type=MessageType.TRAIN, group_id=str(self.rnd), ttl=ttl)
                for n in nodes]
        claimed: dict[int, int] = {}
        for reply in self.grid.send_and_receive(msgs, timeout=ttl):
            node = reply.metadata.src_node_id
            try:
                if reply.has_error():
                    raise WireError(reply.error.reason)
                claimed[node] = meta_int(take_meta(reply.content), "client_id",
                                         hi=(1 << 32) - 2)
            except WireError as exc:
                self.report.dropped[node] = f"no client id: {exc}"
        for n in set(nodes) - set(claimed) - set(self.report.dropped):
            self.report.dropped[n] = "no answer to identify"
        return claimed

    def deliver(self, run: StageRun) -> None:
        stage, ttl = str(run.stage), self.deadlines[str(run.stage)]
        msgs = []
        for m in run.outgoing:
            node = self.node_of[m.recipient]
            if isinstance(m, SharesDelivery):  # the app's instructions come with the shares
                content = _copy(self.fitins[node])
            else:
                content = RecordDict()
            frame = encode(m)
            extra = {"update_dim": self.update_dim} if run.stage is Stage.ADVERTISE_KEYS else {}
            put_frame(content, frame, stage=stage, **extra)
            self.report.bytes_out[node] = self.report.bytes_out.get(node, 0) + len(frame)
            msgs.append((m.recipient, Message(content, dst_node_id=node,
                                              message_type=MessageType.TRAIN,
                                              group_id=str(self.rnd), ttl=ttl)))
        pushed = set(self.grid.push_messages([msg for _, msg in msgs]))
        self._pending = {}
        for u, msg in msgs:
            if msg.metadata.message_id in pushed:
                self._pending[msg.metadata.message_id] = u
            else:
                run.drop(u, DropReason.NOT_CONNECTED, "Flower did not accept the message")
        self._deadline = time.monotonic() + ttl

    def collect(self, run: StageRun) -> None:
        while self._pending and not run.done and time.monotonic() < self._deadline:
            for reply in self.grid.pull_messages(list(self._pending)):
                u = self._pending.pop(reply.metadata.reply_to_message_id, None)
                if u is not None:
                    self._take(run, u, reply)
            if self._pending and not run.done:
                time.sleep(POLL)
        self._pending = {}  # a reply that comes later is never pulled

    def _take(self, run: StageRun, u: int, reply: Message) -> None:
        node, src = self.node_of[u], reply.metadata.src_node_id
        if reply.has_error() and src in (node, SUPERLINK_NODE_ID):
            # from the node: it refused; from the SuperLink: the node is gone or the TTL passed
            why = DropReason.REFUSED if src == node else DropReason.CONNECTION_LOST
            run.drop(u, why, f"node {node}: {reply.error.reason}"[:500])
            return
        if src != node:
            run.drop(u, DropReason.VIOLATION, f"reply from node {src}")
            return
        try:
            frame, _ = take_frame(reply.content)
            self.report.bytes_in[node] = self.report.bytes_in.get(node, 0) + len(frame)
            m = decode(frame)
            if getattr(m, "sender", None) != u:
                raise WireError(f"a message of client {getattr(m, 'sender', None)} from client "
                                f"{u}'s node")
            run.accept(m)
        except RemoteProtocolError as exc:
            run.drop(u, DropReason.VIOLATION, str(exc)[:500])

    def on_survivors_known(self, survivors: frozenset[int]) -> None:
        if self.dp_server is not None:
            s = self.server
            self.dp_server.commit(session_id=s.session_id, round=s.round,
                                  survivors=len(survivors))

    def on_drop(self, client: int, drop: Drop) -> None:
        node = self.node_of[client]
        self.report.dropped[node] = f"{drop.stage}: {drop}"
        log(WARNING, "hardened secure aggregation: node %s left in %s: %s", node, drop.stage,
            drop)

    def on_stage_closed(self, run: StageRun) -> None:
        self.report.stage_seconds[str(run.stage)] = run.seconds


def _deadlines(timeout: float | Mapping[str, float]) -> dict[str, float]:
    names = [str(s) for s in Stage]
    if isinstance(timeout, Mapping):
        unknown = set(timeout) - set(names)
        if unknown:
            raise ValueError(f"unknown stages in timeout: {sorted(unknown)}")
        out = {s: timeout.get(s, DEFAULT_TIMEOUT) for s in names}
    else:
        out = dict.fromkeys(names, timeout)
    for s, v in out.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not (
                math.isfinite(v) and v > 0):
            raise ValueError(f"the {s} deadline must be a positive number of seconds, got {v!r}")
        out[s] = float(v)
    return out


def _copy(content: RecordDict) -> RecordDict:
    out = RecordDict()
    for k, v in content.array_records.items():
        out.array_records[k] = v
    for k, v in content.config_records.items():
        out.config_records[k] = v
    for k, v in content.metric_records.items():
        out.metric_records[k] = v
    return out


def _unflatten(v: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, i = [], 0
    for arr in map(np.asarray, like):
        out.append(v[i:i + arr.size].reshape(arr.shape))
        i += arr.size
    return out


__all__ = ["DEFAULT_TIMEOUT", "HardenedSecAggWorkflow", "RoundReport"]
