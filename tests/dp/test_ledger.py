"""dp.ledger: a fresh ledger verifies; every kind of tampering is caught at the first bad line;
appends are durable; the budget filter refuses without writing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from dp import ledger as ledger_mod
from dp.accounting import RdpAccountant, fold_sampler_distance
from dp.errors import AccountingError, BudgetExceeded, LedgerError
from dp.events import (
    DistributedDiscreteGaussianDpEvent,
    GaussianDpEvent,
    NoOpDpEvent,
    SelfComposedDpEvent,
    SkellamDpEvent,
    ZCDpEvent,
    from_json,
    to_json,
)
from dp.ledger import (
    EPS_DIGITS,
    GENESIS,
    HEAD_LABEL,
    SIGN_LABEL,
    Budget,
    Ledger,
    canonical_line,
    delta_for_rdp,
    line_hash,
    public_key_hex,
    round_up,
    verify,
)

# one realistic round: Skellam, B = 40, noise multiplier 1.2 (about epsilon 4 at delta 1e-5)
EVENT = SkellamDpEvent(1600.0, 40.0, (1.2 * 40.0) ** 2)
MECHANISM = {"name": "skellam", "gamma": 64.0, "bits": 32, "l2_sensitivity": 40.0}
TV = 3e-30
BUDGET = Budget(50.0, 1e-5)
ROUNDS = 4  # lines: 1 open entry, 2..5 rounds; the "middle line" is line 3
MIDDLE, LAST = 3, ROUNDS + 1

OPEN_FIELDS = {"v", "seq", "kind", "prev", "owner", "ledger_id", "created", "budget",
               "accountant", "public_key"}
ROUND_FIELDS = {"v", "seq", "kind", "prev", "time", "session", "round", "cohort", "survivors",
                "n_min", "clip_norm", "mechanism", "event", "sampler_tv", "epsilon", "delta",
                "accountant", "model_hash", "record_level"}


def record(ledger: Ledger, i: int, *, event=EVENT, tv=TV, survivors=9) -> dict:
    return ledger.record_round(event=event, session="5e55", round=i, cohort=10,
                               survivors=survivors, n_min=8, clip_norm=1.0,
                               mechanism=MECHANISM, sampler_tv=tv, model_hash="ab" * 32)


def release(led: Ledger | None) -> None:
    """Close a ledger (it holds the single-writer lock while open)."""
    if led is not None and hasattr(led, "close"):
        led.close()


def make(tmp_path: Path, *, rounds: int = ROUNDS, key=None, budget: Budget = BUDGET,
         name: str = "ledger.jsonl", keep: bool = False) -> tuple[Path, Ledger]:
    """A ledger with ``rounds`` rounds; closed unless ``keep``."""
    path = tmp_path / name
    led = Ledger.create(path, budget, owner="server", signing_key=key)
    for i in range(rounds):
        record(led, i)
    if not keep:
        release(led)
    return path, led


def head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def read_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in read_lines(path)]


def edit(path: Path, no: int, **changes) -> None:
    """Change fields of line ``no`` (1-based), keep it canonical, touch nothing else."""
    lines = read_lines(path)
    entry = json.loads(lines[no - 1])
    entry.update(changes)
    lines[no - 1] = canonical_line(entry)
    write_lines(path, lines)


def forge(path: Path, new_entries: list[dict], key=None, *, strip: bool = True) -> None:
    """Rewrite a whole ledger as its writer would: re-chain, re-sign with ``key``, new head
    (``strip=False`` keeps the signatures already in ``new_entries`` when there is no key)."""
    prev, lines = GENESIS, []
    for e in new_entries:
        body = {k: v for k, v in e.items() if k != "signature" or not strip}
        body["prev"] = prev
        if key is not None:
            body["signature"] = ledger_mod._sign(key, body)
        lines.append(canonical_line(body))
        prev = line_hash(lines[-1])
    write_lines(path, lines)
    head = {"entries": len(lines), "hash": prev, "ledger_id": new_entries[0]["ledger_id"]}
    if key is not None:
        head["signature"] = ledger_mod._sign(key, head, HEAD_LABEL)
    head_path(path).write_bytes(canonical_line(head) + b"\n")


def fails_at(path: Path, line: int | None, match: str | None = None, **kwargs) -> LedgerError:
    with pytest.raises(LedgerError, match=match) as info:
        verify(path, **kwargs)
    assert info.value.line == line, str(info.value)
    return info.value


@pytest.fixture(params=["unsigned", "signed"])
def key(request):
    return Ed25519PrivateKey.generate() if request.param == "signed" else None


def pinned(key) -> dict:
    return {"public_key": public_key_hex(key)} if key is not None else {}


# --------------------------------------------------------------------------------------------
# A fresh ledger
# --------------------------------------------------------------------------------------------


def test_fresh_ledger_verifies_with_and_without_the_pinned_key(tmp_path, key):
    path, led = make(tmp_path, key=key, keep=True)
    for independent in (True, False):
        report = verify(path, independent=independent)
        assert report.entries == ROUNDS and report.signed == (key is not None)
        assert [r["line"] for r in report.rows] == list(range(2, LAST + 1))
        assert report.budget == BUDGET
        assert any("pin" in w for w in report.warnings) == (key is not None)
    if key is not None:
        report = verify(path, public_key=public_key_hex(key))
        assert report.signed and not any("pin" in w for w in report.warnings)
        raw = key.public_key().public_bytes_raw()
        assert verify(path, public_key=raw).entries == ROUNDS
    else:
        other = public_key_hex(Ed25519PrivateKey.generate())
        fails_at(path, 1, "unsigned", public_key=other)
    assert report.epsilon == entries(path)[-1]["epsilon"]
    eps_spent, _ = led.spent()
    assert report.epsilon >= eps_spent


def test_entries_carry_the_documented_fields_and_chain(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    lines = read_lines(path)
    es = [json.loads(x) for x in lines]
    sig = {"signature"} if key is not None else set()
    assert set(es[0]) == OPEN_FIELDS | sig
    assert es[0]["kind"] == "open" and es[0]["seq"] == 0 and es[0]["prev"] == GENESIS
    assert es[0]["budget"] == {"epsilon": 50.0, "delta": 1e-5}
    assert es[0]["public_key"] == (public_key_hex(key) if key is not None else None)
    for i, (line, e) in enumerate(zip(lines, es)):
        assert canonical_line(e) == line  # canonical JSON
        if i:
            assert set(e) == ROUND_FIELDS | sig
            assert e["kind"] == "round" and e["seq"] == i and e["round"] == i - 1
            assert e["prev"] == hashlib.sha256(lines[i - 1]).hexdigest()
            assert from_json(e["event"]) == EVENT and e["mechanism"] == MECHANISM
            assert e["accountant"]["name"] and "dp-accounting" in e["accountant"]["versions"]
            assert (e["cohort"], e["survivors"], e["n_min"], e["sampler_tv"]) == (10, 9, 8, TV)
        if key is not None:  # Ed25519 over label + canonical bytes without the signature
            body = canonical_line({k: v for k, v in e.items() if k != "signature"})
            key.public_key().verify(bytes.fromhex(e["signature"]), SIGN_LABEL + body)
    head = json.loads(head_path(path).read_bytes())
    assert head["entries"] == len(lines)
    assert head["hash"] == hashlib.sha256(lines[-1]).hexdigest()


def test_epsilon_is_cumulative_non_decreasing_and_rounded_up(tmp_path):
    path, _ = make(tmp_path, rounds=6)
    acc, tv, last = RdpAccountant(), 0.0, 0.0
    for e in entries(path)[1:]:
        acc.compose(from_json(e["event"]))
        tv += e["sampler_tv"]
        d = delta_for_rdp(BUDGET, tv)
        exact = acc.epsilon(d)
        assert exact <= e["epsilon"] <= exact + 10.0**-EPS_DIGITS
        micro = e["epsilon"] * 10**EPS_DIGITS
        assert abs(micro - round(micro)) < 1e-6  # on the 1e-6 grid
        assert e["epsilon"] > last
        last = e["epsilon"]
        assert e["delta"] == pytest.approx(fold_sampler_distance(exact, d, tv), rel=1e-12, abs=0)
        assert e["delta"] <= BUDGET.delta
    assert entries(path)[2]["epsilon"] < 2 * entries(path)[1]["epsilon"]  # RDP composition


def test_round_up():
    for x in (0.0, 1.0, 0.1, 1 / 3, 2.5e-7, 1.0000000001, 123.456789012):
        r = round_up(x, 6)
        assert x <= r <= x + 1e-6 + 1e-15
        assert abs(r * 1e6 - round(r * 1e6)) < 1e-6
    assert round_up(0.5, 6) == 0.5 and round_up(1 / 3, 6) == 0.333334
    assert round_up(0.1, 6) == 0.100001  # the double 0.1 is above 1/10: up, not to nearest


def test_reopen_and_continue(tmp_path, key):
    path, _ = make(tmp_path, key=key, rounds=2)
    led = Ledger.open(path, signing_key=key)
    assert led.rounds == 2
    record(led, 2)
    assert verify(path, **pinned(key)).entries == 3
    release(led)
    if key is not None:
        with pytest.raises(LedgerError, match="signing key"):
            Ledger.open(path)


def test_one_writer_at_a_time(tmp_path, key):
    path, led = make(tmp_path, key=key, rounds=1, keep=True)
    before = _snapshot(path)
    with pytest.raises(LedgerError, match="lock"):
        Ledger.open(path, signing_key=key)
    assert _snapshot(path) == before
    release(led)
    with pytest.raises(LedgerError):  # a closed ledger no longer writes
        record(led, 1)
    assert _snapshot(path) == before
    again = Ledger.open(path, signing_key=key)
    record(again, 1)
    release(again)
    assert verify(path, **pinned(key)).entries == 2


def test_a_failed_write_leaves_the_ledger_unusable_until_reopened(tmp_path, monkeypatch):
    path, led = make(tmp_path, rounds=1, keep=True)
    real = os.fsync
    calls = []

    def failing(fd):
        calls.append(fd)
        if len(calls) == 1:  # the fsync of the new line
            raise OSError(5, "Input/output error")
        return real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(OSError):
        record(led, 1)
    monkeypatch.setattr(os, "fsync", real)
    with pytest.raises(LedgerError, match="reopen"):
        record(led, 2)  # memory and file may disagree: no further appends from this object
    release(led)
    # on disk: the line may be there, the head is then one entry behind (a crash's state)
    report = verify(path)
    assert report.entries in (1, 2)
    reopened = Ledger.open(path)
    assert reopened.rounds == report.entries
    record(reopened, 2)
    release(reopened)
    assert verify(path).entries == report.entries + 1


def test_a_crash_inside_create_leaves_no_ledger_and_create_can_rerun(tmp_path, monkeypatch):
    # create writes the open line to a temporary file and the head first, and links the
    # ledger into place last: a crash before the link leaves no ledger file at all
    path = tmp_path / "crash.jsonl"

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", crash)
    with pytest.raises(LedgerError, match="cannot create"):
        Ledger.create(path, BUDGET)
    assert not path.exists()
    monkeypatch.undo()
    led = Ledger.create(path, BUDGET)
    record(led, 0)
    release(led)
    assert verify(path).entries == 1


def test_create_refuses_an_existing_file(tmp_path):
    path, _ = make(tmp_path, rounds=1)
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="exists"):
        Ledger.create(path, BUDGET)
    assert path.read_bytes() == before


def test_appends_are_fsynced_before_the_head_moves(tmp_path, monkeypatch):
    path, led = make(tmp_path, rounds=1, keep=True)
    log: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # pragma: no cover - no procfs
            target = None
        lines = None
        if target == str(path.resolve()):
            lines = path.read_bytes().count(b"\n")
        log.append(("fsync", target, lines))
        return real_fsync(fd)

    def replace(src, dst):
        log.append(("replace", str(Path(dst).resolve()), None))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for i in range(1, 4):
        log.clear()
        record(led, i)
        ledger_syncs = [x for x in log if x[:2] == ("fsync", str(path.resolve()))]
        assert len(ledger_syncs) == 1 and ledger_syncs[0][2] == i + 2  # the new line is in
        head = str(head_path(path).resolve())
        moves = [j for j, x in enumerate(log) if x[:2] == ("replace", head)]
        assert len(moves) == 1
        assert log.index(ledger_syncs[0]) < moves[0]  # the line is durable before the head
        tmp_syncs = [j for j, x in enumerate(log) if x[0] == "fsync" and x[1] == head + ".tmp"]
        assert tmp_syncs and tmp_syncs[0] < moves[0]
        assert any(x[0] == "fsync" and x[1] == str(tmp_path.resolve()) for x in log[moves[0]:])
    assert verify(path).entries == 4


# --------------------------------------------------------------------------------------------
# Tampering: LedgerError at the first bad line
# --------------------------------------------------------------------------------------------


def test_edited_epsilon_in_a_middle_line(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    e = entries(path)[MIDDLE - 1]
    edit(path, MIDDLE, epsilon=round(e["epsilon"] - 0.5, 6))  # hide some spending
    match = "signature" if key is not None else "recorded epsilon"
    fails_at(path, MIDDLE, match)
    fails_at(path, MIDDLE, match, independent=False)
    fails_at(path, MIDDLE, match, **pinned(key))
    with pytest.raises(LedgerError) as info:
        Ledger.open(path, signing_key=key)
    assert info.value.line == MIDDLE


def test_edited_survivors_in_a_middle_line(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    edit(path, MIDDLE, survivors=10)  # a field no recomputation covers: the chain must
    match = "signature" if key is not None else "entry edited"
    fails_at(path, MIDDLE, match)
    fails_at(path, MIDDLE, match, **pinned(key))


@pytest.mark.parametrize("field", ["mechanism", "model_hash", "session", "sampler_tv"])
def test_any_edited_field_in_an_unsigned_ledger_is_blamed_on_its_line(tmp_path, field):
    path, _ = make(tmp_path)
    value = {"mechanism": {"name": "gaussian"}, "model_hash": "00" * 32, "session": "other",
             "sampler_tv": 0.0}[field]
    edit(path, MIDDLE, **{field: value})
    fails_at(path, MIDDLE)


def test_deleted_middle_line(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    lines = read_lines(path)
    del lines[MIDDLE - 1]
    write_lines(path, lines)
    fails_at(path, MIDDLE, "sequence", **pinned(key))


def test_swapped_lines(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    lines = read_lines(path)
    lines[MIDDLE - 1], lines[MIDDLE] = lines[MIDDLE], lines[MIDDLE - 1]
    write_lines(path, lines)
    fails_at(path, MIDDLE, "sequence", **pinned(key))


def test_last_line_deleted_is_caught_by_the_head_file(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    write_lines(path, read_lines(path)[:-1])
    fails_at(path, LAST, "deleted from the end", **pinned(key))
    fails_at(path, LAST, "deleted from the end")
    with pytest.raises(LedgerError) as info:
        Ledger.open(path, signing_key=key)
    assert info.value.line == LAST


def test_last_line_edited(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    edit(path, LAST, survivors=10)
    fails_at(path, LAST, "signature" if key is not None else "head file", **pinned(key))


def test_head_file_tampering(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    hp = head_path(path)
    head = json.loads(hp.read_bytes())
    hp.write_bytes(canonical_line({**head, "hash": "0" * 64}) + b"\n")
    fails_at(path, LAST)
    hp.write_bytes(b"\x00garbage")
    fails_at(path, LAST, "unreadable")
    hp.unlink()  # without the head, entries cut from the end could not be seen
    fails_at(path, LAST, "missing")
    other, _ = make(tmp_path, key=key, name="other.jsonl")  # same length, another ledger
    hp.write_bytes(head_path(other).read_bytes())
    fails_at(path, LAST)


def _tear(tmp_path: Path, key) -> tuple[Path, bytes]:
    """A crash in the middle of appending round ROUNDS: its line is half written, the head
    still describes the ledger before it. Returns the path and the bytes before the crash."""
    path, led = make(tmp_path, key=key, keep=True)
    before, head = path.read_bytes(), head_path(path).read_bytes()
    record(led, ROUNDS)
    release(led)
    new_line = path.read_bytes()[len(before):]
    path.write_bytes(before + new_line[: len(new_line) // 2])
    head_path(path).write_bytes(head)
    return path, before


def test_torn_last_line(tmp_path, key):
    path, before = _tear(tmp_path, key)
    err = fails_at(path, LAST + 1, "torn", **pinned(key))
    assert f"the {LAST} entries before it verify" in str(err)
    with pytest.raises(LedgerError) as info:
        Ledger.open(path, signing_key=key)
    assert info.value.line == LAST + 1
    led = Ledger.open(path, signing_key=key, repair=True)
    assert path.read_bytes() == before  # exactly the torn bytes were cut
    assert led.rounds == ROUNDS and verify(path, **pinned(key)).entries == ROUNDS
    record(led, ROUNDS)
    report = verify(path, **pinned(key))
    assert report.entries == ROUNDS + 1 and report.warnings == []


def test_resigned_with_another_key_is_refused_when_the_real_key_is_pinned(tmp_path):
    real, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    path, _ = make(tmp_path, key=real)
    orig = entries(path)
    pin = public_key_hex(real)

    # 1. rewritten under the forger's key, named in the open entry: self-consistent, so only
    #    pinning the real key tells
    forge(path, [{**orig[0], "public_key": public_key_hex(forger)}, *orig[1:]], forger)
    assert verify(path).signed
    fails_at(path, 1, "different signing key", public_key=pin)

    # 2. the open entry still names the real key, but every line is signed by the forger
    forge(path, orig, forger)
    fails_at(path, 1, "signature", public_key=pin)
    fails_at(path, 1, "signature")

    # 3. signatures stripped: an unsigned ledger where a key is pinned
    forge(path, [{**orig[0], "public_key": None}, *orig[1:]], None)
    assert not verify(path).signed
    fails_at(path, 1, "unsigned", public_key=pin)

    # 4. an unsigned ledger whose line carries a signature anyway (re-chained around it)
    odd = [{**orig[0], "public_key": None}, *orig[1:]]
    odd = [{k: v for k, v in e.items() if k != "signature"} for e in odd]
    odd[MIDDLE - 1]["signature"] = orig[MIDDLE - 1]["signature"]
    forge(path, odd, None, strip=False)
    fails_at(path, MIDDLE, "unsigned ledger")

    # control: the helper reproduces the genuine ledger exactly
    forge(path, orig, real)
    assert verify(path, public_key=pin).entries == ROUNDS


def test_forged_over_budget_history(tmp_path, key):
    path, _ = make(tmp_path, key=key)
    es = entries(path)
    eps = [e["epsilon"] for e in es[1:]]
    budget = Budget((eps[1] + eps[2]) / 2, BUDGET.delta)  # the third round (line 4) crosses it

    def rewritten(b: Budget) -> list[dict]:
        out = [dict(e) for e in es]
        out[0]["budget"] = {"epsilon": b.epsilon, "delta": b.delta}
        acc, tv = RdpAccountant(), 0.0
        for e in out[1:]:  # every recorded value recomputed for the new budget
            acc.compose(from_json(e["event"]))
            tv += e["sampler_tv"]
            d = delta_for_rdp(b, tv)
            exact = acc.epsilon(d)
            e["epsilon"], e["delta"] = round_up(exact, EPS_DIGITS), fold_sampler_distance(
                exact, d, tv)
        return out

    # control: the same rewrite with a budget that holds verifies, so only the budget fails
    forge(path, rewritten(Budget(eps[-1] + 0.5, BUDGET.delta)), key)
    assert verify(path, **pinned(key)).entries == ROUNDS
    forge(path, rewritten(budget), key)
    fails_at(path, 4, "over budget", **pinned(key))
    fails_at(path, 4, "over budget", independent=False)
    with pytest.raises(LedgerError) as info:
        Ledger.open(path, signing_key=key)
    assert info.value.line == 4


@pytest.mark.parametrize(("mangle", "match"), [
    (lambda e: json.dumps(e, sort_keys=True).encode(), "canonical"),  # spaces
    (lambda e: json.dumps(dict(reversed(e.items())), separators=(",", ":")).encode(),
     "canonical"),  # key order
    (lambda e: canonical_line(e) + b" ", "canonical"),
    (lambda e: canonical_line(e).replace(b'"cohort":10', b'"cohort":1e1'), "canonical"),
    (lambda e: json.dumps(e, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).replace("5e55", "5\u00e955").encode(),
     "canonical"),
])
def test_non_canonical_json(tmp_path, mangle, match):
    path, _ = make(tmp_path)
    lines = read_lines(path)
    entry = json.loads(lines[MIDDLE - 1])
    lines[MIDDLE - 1] = mangle(entry)
    assert lines[MIDDLE - 1] != canonical_line(entry)
    write_lines(path, lines)
    fails_at(path, MIDDLE, match)


@pytest.mark.parametrize("garbage", [
    b"\x00\xff\xfe\x80garbage", b"{not json", b"", b"[1,2,3]", b'"a string"', b"null",
    b'{"a":NaN}', b'{"a":Infinity}', b"\xc3\x28", b"{" * 10 + b"}" * 10,
])
def test_garbage_bytes(tmp_path, garbage):
    path, _ = make(tmp_path)
    lines = read_lines(path)
    lines[MIDDLE - 1] = garbage
    write_lines(path, lines)
    fails_at(path, MIDDLE)


def test_garbage_in_the_open_entry_and_empty_or_missing_files(tmp_path):
    path, _ = make(tmp_path)
    lines = read_lines(path)
    write_lines(path, [b"\x89PNG\r"] + lines[1:])
    fails_at(path, 1)
    path.write_bytes(b"")
    fails_at(path, 1, "empty")
    fails_at(tmp_path / "missing.jsonl", None, "cannot read")
    path2, _ = make(tmp_path, name="other.jsonl")
    edit(path2, 1, budget={"epsilon": -1.0, "delta": 1e-5})
    fails_at(path2, 1, "budget")


def test_line_length_limit(tmp_path):
    path, _ = make(tmp_path)
    lines = read_lines(path)
    lines[MIDDLE - 1] = b'"' + b"a" * (1 << 20) + b'"'
    write_lines(path, lines)
    fails_at(path, MIDDLE, "1 MiB")


def _huge_int_event(e):
    return {**e, "event": {"type": "gaussian", "noise_multiplier": 10**400}}


@pytest.mark.parametrize(("where", "change", "line"), [
    pytest.param("line", lambda e: {**e, "mechanism": "skellam"}, MIDDLE, id="mechanism-str"),
    pytest.param("line", _huge_int_event, MIDDLE, id="huge-int-in-event"),
    pytest.param("line", lambda e: {**e, "sampler_tv": 10**400}, MIDDLE, id="huge-int-tv"),
    pytest.param("line", lambda e: {**e, "epsilon": [1]}, MIDDLE, id="epsilon-list"),
    pytest.param("line", lambda e: {k: v for k, v in e.items() if k != "event"}, MIDDLE,
                 id="no-event"),
    pytest.param("line", lambda e: {**e, "event": {"type": "non-private"}}, MIDDLE,
                 id="non-private-event"),
    pytest.param("line", lambda e: {**e, "event": {"type": "gaussian", "noise_multiplier": 0}},
                 MIDDLE, id="zero-noise-event"),
    pytest.param("raw", b"[" * 100_000, MIDDLE, id="deeply-nested-json"),
    pytest.param("open", lambda e: {**e, "public_key": 5}, 1, id="public-key-int"),
    pytest.param("open", lambda e: {**e, "public_key": "zz"}, 1, id="public-key-not-hex"),
    pytest.param("open", lambda e: {**e, "budget": {"epsilon": 10**400, "delta": 1e-5}}, 1,
                 id="budget-huge-int"),
    pytest.param("open", lambda e: {**e, "budget": [50.0, 1e-5]}, 1, id="budget-list"),
    pytest.param("head", b'{"entries":1e400,"hash":"00"}\n', LAST, id="head-entries-inf"),
    pytest.param("head", b'{"entries":[],"hash":"00"}\n', LAST, id="head-entries-list"),
])
def test_malformed_content_is_a_ledger_error_at_its_line(tmp_path, where, change, line):
    path, _ = make(tmp_path)
    lines = read_lines(path)
    if where == "raw":
        lines[MIDDLE - 1] = change
    elif where == "head":
        head_path(path).write_bytes(change)
    else:
        no = 1 if where == "open" else MIDDLE
        lines[no - 1] = canonical_line(change(json.loads(lines[no - 1])))
    write_lines(path, lines)
    fails_at(path, line)


# --------------------------------------------------------------------------------------------
# Budget filter
# --------------------------------------------------------------------------------------------


def _snapshot(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), head_path(path).read_bytes()


def test_budget_filter_refuses_without_writing(tmp_path, key):
    per_round = RdpAccountant().compose(EVENT).epsilon(BUDGET.delta)
    budget = Budget(per_round * 1.2, BUDGET.delta)  # room for one round, not two
    path, led = make(tmp_path, key=key, budget=budget, rounds=1, keep=True)
    two = RdpAccountant().compose(EVENT, 2).epsilon(BUDGET.delta)
    assert two > budget.epsilon  # the test's premise
    before, spent = _snapshot(path), led.spent()
    with pytest.raises(BudgetExceeded):
        led.check(EVENT, TV)
    with pytest.raises(BudgetExceeded):
        record(led, 1)
    with pytest.raises(BudgetExceeded):
        led.check(GaussianDpEvent(0.0))  # a non-private event never fits
    assert _snapshot(path) == before
    assert led.rounds == 1 and led.spent() == spent
    # a much smaller event still fits, and the refusals left the ledger consistent
    small = SkellamDpEvent(1600.0, 40.0, (40.0 * 40.0) ** 2)
    eps, delta = led.check(small, TV)
    assert eps <= budget.epsilon and delta <= budget.delta
    record(led, 1, event=small)
    assert verify(path, **pinned(key)).entries == 2
    release(led)
    reopened = Ledger.open(path, signing_key=key)
    with pytest.raises(BudgetExceeded):
        reopened.check(EVENT, TV)


def test_budget_filter_on_delta(tmp_path):
    path, led = make(tmp_path, rounds=1, keep=True)
    before = _snapshot(path)
    # the sampler's distance alone exhausts delta
    with pytest.raises(BudgetExceeded, match="statistical distance"):
        led.check(EVENT, sampler_tv=BUDGET.delta)
    with pytest.raises(BudgetExceeded):
        record(led, 1, tv=BUDGET.delta)
    assert _snapshot(path) == before
    # cumulative: each round takes 40 % of what delta can absorb; the third one is refused
    share = 0.4 * BUDGET.delta / (1 + math.exp(BUDGET.epsilon))
    small = SkellamDpEvent(1600.0, 40.0, (40.0 * 40.0) ** 2)
    record(led, 1, tv=share, event=small)
    record(led, 2, tv=share, event=small)
    before = _snapshot(path)
    with pytest.raises(BudgetExceeded):
        led.check(small, share)
    with pytest.raises(BudgetExceeded):
        record(led, 3, tv=share, event=small)
    assert _snapshot(path) == before
    report = verify(path)
    assert report.entries == 3 and report.delta <= BUDGET.delta


def test_budget_must_be_valid():
    from dp.errors import ParameterError

    for eps, delta in ((0.0, 1e-5), (-1.0, 1e-5), (math.inf, 1e-5), (math.nan, 1e-5),
                       (1.0, 0.0), (1.0, 1.0), (1.0, math.nan)):
        with pytest.raises(ParameterError):
            Budget(eps, delta)


# --------------------------------------------------------------------------------------------
# Defects: ledgers written only through record_round that do not verify
# --------------------------------------------------------------------------------------------


def _near_budget() -> tuple[GaussianDpEvent, Budget]:
    """A round whose exact epsilon is within the budget but whose epsilon rounded up to 1e-6
    (what the ledger writes) is not."""
    event = GaussianDpEvent(3.0)
    exact = RdpAccountant().compose(event).epsilon(BUDGET.delta)
    rounded = round_up(exact, EPS_DIGITS)
    assert exact < rounded
    return event, Budget((exact + rounded) / 2, BUDGET.delta)


def _case(name: str):
    if name == "near-budget":
        return _near_budget()
    if name == "count-beyond-json-limit":
        return SelfComposedDpEvent(NoOpDpEvent(), 2 * 10**9), BUDGET
    return DistributedDiscreteGaussianDpEvent(1.0, 1.0, 1e4, 3, 2 * 10**9), BUDGET


@pytest.mark.parametrize("case", [
    # regressions: check() compared the exact epsilon with the budget, record_round wrote it
    # rounded up, and verify() (so Ledger.open too) rejected the ledger as over budget; and
    # to_json wrote counts and dims above the limit that from_json (so verify) refuses
    "near-budget", "count-beyond-json-limit", "dim-beyond-json-limit",
])
def test_record_round_writes_only_what_verifies(tmp_path, case):
    event, budget = _case(case)
    path = tmp_path / "l.jsonl"
    led = Ledger.create(path, budget)
    before = _snapshot(path)
    try:
        record(led, 0, event=event, tv=0.0)
    except (BudgetExceeded, AccountingError, LedgerError):
        assert _snapshot(path) == before  # refused, and nothing written
        return
    release(led)
    release(Ledger.open(path))
    verify(path)
    verify(path, independent=False)


@pytest.mark.parametrize("event", [NoOpDpEvent(), GaussianDpEvent(1e6)],
                         ids=["noop", "gaussian-1e6"])
def test_a_round_with_negligible_privacy_loss_verifies(tmp_path, event):
    # regression: the writer's accountant lacked dp_accounting's epsilon = 0 branch for RDP
    # below ~delta^2, so the independent recomputation rejected the writer's own ledger
    led = Ledger.create(tmp_path / "l.jsonl", BUDGET)
    assert record(led, 0, event=event, tv=0.0)["epsilon"] == 0.0
    assert verify(tmp_path / "l.jsonl", independent=False).epsilon == 0.0
    assert verify(tmp_path / "l.jsonl").epsilon == 0.0
    record(led, 1, tv=0.0)
    assert verify(tmp_path / "l.jsonl").entries == 2


class _Hung(BaseException):
    """Raised by the timer; a BaseException so that no ``except Exception`` swallows it."""


def test_an_absurd_event_in_a_line_does_not_hang_verify(tmp_path):
    # regression: tau was a Python loop over range(1, clients) for each of the 266 orders (and
    # an np.arange(clients) in the cross-check), so one edited line of an unsigned ledger
    # made verify() hang or exhaust memory instead of reporting the line
    import signal

    path, _ = make(tmp_path)
    event = {"type": "distributed-discrete-gaussian", "l1_sensitivity": 1.0,
             "l2_sensitivity": 1.0, "local_variance": 1.0, "clients": 10**9, "dim": 1}
    edit(path, MIDDLE, event=event)

    def alarm(*_):
        raise _Hung

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        fails_at(path, MIDDLE)
    except _Hung:
        pytest.fail("verify() still running after 2 s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_events_in_the_ledger_round_trip(tmp_path):
    path, led = make(tmp_path, rounds=0, keep=True)
    e = record(led, 0)
    assert e["event"] == to_json(EVENT)
    assert json.loads(read_lines(path)[-1]) == e


# --------------------------------------------------------------------------------------------
# Attack: an event with a huge (or infinite, NaN, beyond float range) epsilon
# --------------------------------------------------------------------------------------------

# (event, what its epsilon is): every kind of value an accountant can produce beyond a budget
EXTREME_EVENTS = [
    pytest.param(GaussianDpEvent(1e-12), id="gaussian-1e-12-eps-1e24"),
    pytest.param(GaussianDpEvent(1e-100), id="gaussian-1e-100-eps-1e200"),
    pytest.param(GaussianDpEvent(1e-160), id="gaussian-1e-160-rdp-overflows"),
    pytest.param(GaussianDpEvent(1e-300), id="gaussian-1e-300-z2-underflows"),
    pytest.param(GaussianDpEvent(5e-324), id="gaussian-subnormal"),
    pytest.param(GaussianDpEvent(-0.0), id="gaussian-negative-zero"),
    pytest.param(ZCDpEvent(1e300, 0.0), id="zcdp-eps-1e303"),
    pytest.param(ZCDpEvent(1e308, 1e308), id="zcdp-rdp-overflows"),
    pytest.param(SkellamDpEvent(1.0, 1.0, 5e-324), id="skellam-subnormal-variance"),
    pytest.param(SkellamDpEvent(1.0, 1e200, 1.0), id="skellam-huge-sensitivity"),
    pytest.param(DistributedDiscreteGaussianDpEvent(1.0, 1.0, 5e-324, 3, 1),
                 id="ddg-subnormal-variance"),
    pytest.param(DistributedDiscreteGaussianDpEvent(1e300, 1e300, 1e-300, 3, 10),
                 id="ddg-inf-times-zero"),
    pytest.param(SelfComposedDpEvent(ZCDpEvent(1e300, 1e300), 10**9), id="composed-overflow"),
]


@pytest.mark.parametrize("event", EXTREME_EVENTS)
def test_huge_finite_epsilon_is_refused_not_crashed(tmp_path, key, event):
    # regression: GaussianDpEvent(1e-12) gives epsilon ~1e24, and round_up's Decimal quantize
    # (28-digit default context) raised decimal.InvalidOperation from check(); 1e-300 raised
    # ZeroDivisionError (z * z underflowed to 0), a subnormal Skellam variance too, and a
    # subnormal DDG variance OverflowError (float **): callers crashed instead of refusing
    path, led = make(tmp_path, key=key, rounds=1, keep=True)
    before, spent = _snapshot(path), led.spent()
    with pytest.raises(BudgetExceeded):
        led.check(event)
    with pytest.raises(BudgetExceeded):
        led.check(event, TV)
    with pytest.raises(BudgetExceeded):
        record(led, 1, event=event)
    assert _snapshot(path) == before and led.rounds == 1 and led.spent() == spent
    record(led, 1)  # the refusals left the ledger usable and consistent
    release(led)
    assert verify(path, **pinned(key)).entries == 2


@pytest.mark.parametrize("x", [1e308, 1.7976931348623157e308, -1.7976931348623157e308, 1e24,
                               1e22 + 2**21, 2.0**52 + 0.5, 5e-324, 2.2250738585072014e-308,
                               -0.0, 0.0, -5e-324])
def test_round_up_never_raises_for_a_finite_float(x):
    r = round_up(x, EPS_DIGITS)
    assert math.isfinite(r) and r >= x
    assert r - x <= 10.0**-EPS_DIGITS or r == x  # on the 1e-6 grid, or already on it


def test_round_up_passes_non_finite_values_through():
    assert round_up(math.inf, EPS_DIGITS) == math.inf  # the callers refuse them
    assert round_up(-math.inf, EPS_DIGITS) == -math.inf
    assert math.isnan(round_up(math.nan, EPS_DIGITS))


def test_round_up_ignores_the_threads_decimal_context():
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec, ctx.traps[decimal.Inexact] = 3, True
        assert round_up(123.4567891, EPS_DIGITS) == 123.456790


def test_a_huge_budget_records_and_verifies_a_huge_epsilon(tmp_path):
    # the "passes" side of the class: epsilon 1e24 within a budget of 1e300 is written rounded
    # up (unchanged: floats that large are integers) and the independent recomputation agrees
    path = tmp_path / "huge.jsonl"
    led = Ledger.create(path, Budget(1e300, BUDGET.delta))
    e = record(led, 0, event=GaussianDpEvent(1e-12), tv=0.0)
    assert e["epsilon"] == pytest.approx(1e24, rel=1e-9)
    release(led)
    assert verify(path).epsilon == e["epsilon"]
    assert verify(path, independent=False).epsilon == e["epsilon"]
    release(Ledger.open(path))


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """One open ledger per budget, for the property below (check() writes nothing)."""
    d = tmp_path_factory.mktemp("probe")
    leds = {eps: Ledger.create(d / f"{i}.jsonl", Budget(eps, BUDGET.delta))
            for i, eps in enumerate((1.0, 50.0, 1e30, 1e300))}
    yield leds
    for led in leds.values():
        led.close()


@given(z=st.floats(1e-300, 1e3), budget=st.sampled_from((1.0, 50.0, 1e30, 1e300)),
       tv=st.sampled_from((0.0, TV)))
def test_check_passes_or_refuses_for_any_noise_multiplier(probes, z, budget, tv):
    led = probes[budget]
    try:
        eps, delta = led.check(GaussianDpEvent(z), tv)
    except BudgetExceeded:
        return
    assert math.isfinite(eps) and 0 <= eps <= round_up(eps, EPS_DIGITS) <= budget
    assert 0 < delta <= BUDGET.delta


def _rewrite_with_event(es: list[dict], no: int, event) -> list[dict]:
    """Entries with line ``no``'s event replaced and every later epsilon and delta recomputed
    as the writer would (what a forger holding the key, or editing an unsigned ledger, does)."""
    out = [dict(e) for e in es]
    out[no - 1]["event"] = to_json(event)
    acc, tv = RdpAccountant(), 0.0
    for e in out[1:]:
        acc.compose(from_json(e["event"]))
        tv += e["sampler_tv"]
        d = delta_for_rdp(BUDGET, tv)
        exact = acc.epsilon(d)
        e["epsilon"] = round_up(exact, EPS_DIGITS) if math.isfinite(exact) else sys.float_info.max
        e["delta"] = fold_sampler_distance(exact, d, tv)
    return out


@pytest.mark.parametrize(("event", "match"), [
    pytest.param(GaussianDpEvent(1e-12), "over budget", id="gaussian-1e-12-eps-1e24"),
    pytest.param(GaussianDpEvent(1e-100), "over budget", id="gaussian-1e-100-eps-1e200"),
    pytest.param(ZCDpEvent(1e300, 0.0), "over budget", id="zcdp-eps-1e303"),
    pytest.param(GaussianDpEvent(1e-300), "epsilon inf", id="gaussian-1e-300"),
    pytest.param(GaussianDpEvent(5e-324), "epsilon inf", id="gaussian-subnormal"),
    pytest.param(SkellamDpEvent(1.0, 1.0, 5e-324), None, id="skellam-subnormal-variance"),
    pytest.param(SkellamDpEvent(1.0, 1e200, 1.0), None, id="skellam-huge-sensitivity"),
    pytest.param(DistributedDiscreteGaussianDpEvent(1.0, 1.0, 5e-324, 3, 1), None,
                 id="ddg-subnormal-variance"),
])
def test_rewritten_entry_with_huge_epsilon_fails_verify_typed(tmp_path, key, event, match):
    # regression: an entry rewritten consistently (epsilon recomputed, re-chained, re-signed,
    # new head) whose event gives epsilon ~1e24 made verify() raise decimal.InvalidOperation
    # from round_up, and a noise multiplier of 1e-300 ZeroDivisionError, instead of LedgerError
    path, _ = make(tmp_path, key=key)
    forge(path, _rewrite_with_event(entries(path), MIDDLE, event), key)
    fails_at(path, MIDDLE, match, **pinned(key))
    fails_at(path, MIDDLE, match, independent=False, **pinned(key))
    with pytest.raises(LedgerError) as info:
        Ledger.open(path, signing_key=key)
    assert info.value.line == MIDDLE


@pytest.mark.parametrize("value", [1e308, sys.float_info.max, 1e24, 5e-324, -0.0, -1e308])
def test_edited_extreme_recorded_epsilon_fails_verify_typed(tmp_path, value):
    path, _ = make(tmp_path)
    edit(path, MIDDLE, epsilon=value)
    fails_at(path, MIDDLE)


# --------------------------------------------------------------------------------------------
# Attack: rollback -- another ledger, or a shorter history, signed with the same key
# --------------------------------------------------------------------------------------------

SMALL = SkellamDpEvent(1600.0, 40.0, (40.0 * 40.0) ** 2)  # a far smaller epsilon than EVENT


def _swap_in(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())
    head_path(path).write_bytes(head_path(other).read_bytes())


def test_rollback_to_another_ledger_with_same_key_is_refused_by_id_pin(tmp_path):
    signer = Ed25519PrivateKey.generate()
    pin = public_key_hex(signer)
    path, _ = make(tmp_path, key=signer)
    audit = verify(path, public_key=pin)  # what the auditor records at the first audit
    ledger_id, rounds = audit.ledger_id, audit.entries
    assert len(ledger_id) == 32 and ledger_id == entries(path)[0]["ledger_id"]
    assert verify(path, public_key=pin, expected_id=ledger_id, min_rounds=rounds).entries == 4
    assert verify(path, public_key=pin, expected_id=ledger_id.upper()).entries == ROUNDS

    # an older ledger of the same server, same key, more rounds but far less epsilon spent
    other = tmp_path / "other.jsonl"
    led = Ledger.create(other, BUDGET, signing_key=signer)
    for i in range(ROUNDS + 2):
        record(led, i, event=SMALL)
    release(led)
    _swap_in(path, other)

    report = verify(path, public_key=pin)  # the attack: signature, chain and head all verify
    assert report.epsilon < audit.epsilon and report.ledger_id != ledger_id
    assert verify(path, public_key=pin, min_rounds=rounds).entries == ROUNDS + 2  # not enough
    err = fails_at(path, 1, "pinned", public_key=pin, expected_id=ledger_id)
    assert ledger_id in str(err) and report.ledger_id in str(err)
    fails_at(path, 1, "pinned", public_key=pin, expected_id=ledger_id, min_rounds=rounds)
    fails_at(path, 1, "pinned", expected_id=ledger_id, independent=False)


def test_truncated_history_below_min_rounds_is_refused(tmp_path):
    signer = Ed25519PrivateKey.generate()
    pin = public_key_hex(signer)
    path, _ = make(tmp_path, key=signer)
    audit = verify(path, public_key=pin)
    ledger_id, rounds = audit.ledger_id, audit.entries

    # cut without a new head: the head file catches it
    full = read_lines(path)
    write_lines(path, full[:3])
    fails_at(path, 4, "deleted from the end", public_key=pin)

    # cut by the key holder, who writes and signs a new head: self-consistent, same ledger id
    orig = [json.loads(x) for x in full]
    forge(path, orig[:3], signer)
    assert read_lines(path) == full[:3]  # byte for byte the first three lines
    report = verify(path, public_key=pin, expected_id=ledger_id)  # the gap the pin closes
    assert report.entries == 2 and report.epsilon < audit.epsilon
    err = fails_at(path, 4, "at least 4", public_key=pin, expected_id=ledger_id,
                   min_rounds=rounds)
    assert "2 rounds" in str(err)
    fails_at(path, 4, "truncated", min_rounds=rounds, independent=False)
    assert verify(path, public_key=pin, min_rounds=2).entries == 2
    assert verify(path, public_key=pin, min_rounds=0).entries == 2

    # the genuine ledger, grown since the audit, passes both pins (they are minimums)
    forge(path, orig, signer)
    led = Ledger.open(path, signing_key=signer)
    record(led, ROUNDS)
    release(led)
    assert verify(path, public_key=pin, expected_id=ledger_id,
                  min_rounds=rounds).entries == ROUNDS + 1


@pytest.mark.parametrize("kwargs", [
    {"expected_id": "zz" * 16}, {"expected_id": "ab" * 15}, {"expected_id": 5},
    {"expected_id": b"\x00" * 16}, {"min_rounds": -1}, {"min_rounds": True},
    {"min_rounds": 1.5}, {"min_rounds": "3"},
])
def test_malformed_pins_are_parameter_errors(tmp_path, kwargs):
    from dp.errors import ParameterError

    path, _ = make(tmp_path, rounds=1)
    with pytest.raises(ParameterError):
        verify(path, **kwargs)


@pytest.mark.parametrize("noise", [1e155, 1e200, 1e300])
def test_round_the_independent_accountant_cannot_check_is_refused(tmp_path, noise):
    """Absurd noise (a tiny epsilon) that dp_accounting overflows on: the filter refuses it
    (typed), so no ledger holds a round that verify would then call invalid."""
    from dp_accounting import GaussianDpEvent

    from dp.ledger import Budget, Ledger, verify

    path = tmp_path / "l.jsonl"
    with Ledger.create(path, Budget(1.0, 1e-6)) as led:
        with pytest.raises(AccountingError, match="independent accountant"):
            led.record_round(event=GaussianDpEvent(noise), session="s", round=0, cohort=10,
                             survivors=10, n_min=5, clip_norm=1.0, mechanism={},
                             sampler_tv=0.0)
        led.record_round(event=GaussianDpEvent(1e8), session="s", round=0, cohort=10,
                         survivors=10, n_min=5, clip_norm=1.0, mechanism={}, sampler_tv=0.0)
    assert verify(path).entries == 1


def test_open_ledger_creates_opens_and_refuses_another_budget(tmp_path):
    from dp import BudgetMismatch, open_ledger

    path = tmp_path / "l.jsonl"
    with open_ledger(path, Budget(4.0, 1e-5), None, "client-3") as led:
        first_id = led.ledger_id
    with open_ledger(path, Budget(4.0, 1e-5), owner="client-3") as led:
        assert led.ledger_id == first_id  # opened (and verified), not recreated
    before = path.read_bytes()
    for other in (Budget(8.0, 1e-5), Budget(4.0, 1e-6)):
        with pytest.raises(BudgetMismatch, match="was created for the budget"):
            open_ledger(path, other, owner="client-3")
    assert path.read_bytes() == before
    with open_ledger(path, Budget(4.0, 1e-5)) as led:  # the refusal released the lock
        assert led.rounds == 0
