"""The privacy budget ledger: append-only JSON Lines, hash-chained, optionally signed, durable.

Line 1 is an ``open`` entry (budget, owner, accountant, the signer's public key); each later
line is a ``round`` entry: session and round, cohort and survivor counts, clip norm, mechanism
and its parameters, the DP event, the sampler's statistical distance, cumulative (epsilon,
delta) (epsilon rounded up to 1e-6, delta exact), accountant and library versions, model
hash, and ``prev``, the SHA-256 of the previous line's bytes. Lines are canonical JSON
(sorted keys, no spaces), so a line's hash is a function of its content. With a signing key
each line carries an Ed25519 signature over its canonical bytes without the signature, under
the label ``secagg-ledger/v1``.

Durability: a line is written with one ``write`` then ``flush`` and ``os.fsync``; afterwards
``LEDGER.head`` (entry count and last hash, signed too) is replaced atomically (temporary file,
fsync, rename). A crash mid-append leaves an incomplete last line: :func:`verify` checks every
earlier entry and then reports the torn line; :meth:`Ledger.open` refuses to append after it
unless ``repair=True``, which cuts the torn bytes. The head file is what reveals entries
deleted from the end, which no hash chain can.

Rollback: a signature shows who wrote a ledger, not that it is the latest one. An older ledger
signed with the same key, or the same ledger cut back by the key holder with a re-signed head,
verifies on its own; :func:`verify` refuses them when the auditor pins the ledger id
(``expected_id``) and the round count seen at the last audit (``min_rounds``).

Budget filter: :meth:`Ledger.check` answers whether one more event stays within the budget,
before a round starts; :meth:`Ledger.record_round` re-checks and refuses with
:class:`BudgetExceeded` instead of writing an over-budget entry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Context, Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .accounting import (
    ACCOUNTANT_NAME,
    ACCOUNTANTS,
    RDP_ONLY_NAME,
    RdpAccountant,
    fold_sampler_distance,
)
from .errors import AccountingError, BudgetExceeded, BudgetMismatch, LedgerError, ParameterError
from .events import DpEvent, from_json, to_json

VERSION = 1
SIGN_LABEL = b"secagg-ledger/v1\x00"
HEAD_LABEL = b"secagg-ledger-head/v1\x00"
GENESIS = "0" * 64
EPS_DIGITS = 6  # cumulative epsilon is rounded up to 1e-6
MAX_LINE = 1 << 20


def canonical_line(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def round_up(x: float, digits: int) -> float:
    """x rounded up (towards +inf) to ``digits`` decimal places, as a float >= x.

    Never raises for a float: NaN and +-inf come back unchanged (callers refuse them), and any
    finite float, up to 1.8e308 and down to the subnormals, is rounded in a local Decimal
    context with enough digits for its integer part plus ``digits`` (the thread's default
    context, 28 digits, made ``quantize`` fail with InvalidOperation above ~1e22)."""
    x = float(x)
    if not math.isfinite(x):
        return x
    ctx = Context(prec=_MAX_INT_DIGITS + max(digits, 0) + 2, rounding=ROUND_CEILING)
    q = Decimal(x).quantize(Decimal(1).scaleb(-digits, ctx), context=ctx)
    r = float(q)
    return r if r >= x else math.nextafter(r, math.inf)


_MAX_INT_DIGITS = len(str(int(1.7976931348623157e308)))  # 309: the largest float's integer part


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 1e6 else f"{x:.4g}"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("secagg-hardened", "dp-accounting", "numpy", "cryptography"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass(frozen=True)
class Budget:
    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon)
                and self.epsilon > 0):
            raise ParameterError(f"budget epsilon must be finite and positive, got "
                                 f"{self.epsilon!r}")
        if not (isinstance(self.delta, int | float) and 0 < self.delta < 1):
            raise ParameterError(f"budget delta must be in (0, 1), got {self.delta!r}")


def _sign(key: Ed25519PrivateKey, entry: dict[str, Any], label: bytes = SIGN_LABEL) -> str:
    return key.sign(label + canonical_line(entry)).hex()


def _verify_sig(pub: Ed25519PublicKey, entry: dict[str, Any], sig: object,
                label: bytes = SIGN_LABEL) -> bool:
    if not isinstance(sig, str):
        return False
    try:
        pub.verify(bytes.fromhex(sig), label + canonical_line(entry))
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_hex(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def load_public_key(hex_or_bytes: str | bytes) -> Ed25519PublicKey:
    if not isinstance(hex_or_bytes, str | bytes):
        raise LedgerError("public key must be hex text or bytes", 1)
    try:
        raw = bytes.fromhex(hex_or_bytes) if isinstance(hex_or_bytes, str) else hex_or_bytes
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise LedgerError(f"not an Ed25519 public key: {exc}", 1) from None


def delta_for_rdp(budget: Budget, tv_total: float) -> float:
    """The delta given to the RDP conversion so that, with the sampler's distance folded in,
    the total stays within the budget's delta (uses e^epsilon_budget as the bound)."""
    spare = budget.delta - (1 + math.exp(min(budget.epsilon, 700))) * tv_total
    if not spare > 0:  # also a NaN distance
        raise BudgetExceeded("(1 + e^epsilon_budget) times the noise sampler's statistical "
                             "distance exceeds delta: the epsilon budget is too large (> ~60) "
                             "to fold the sampler's distance into delta")
    return spare


@dataclass
class VerifyReport:
    entries: int  # round entries
    epsilon: float
    delta: float
    budget: Budget
    signed: bool
    warnings: list[str]
    rows: list[dict[str, Any]]
    # what Ledger.open continues from (recomputed while verifying, so not read twice)
    accountant: RdpAccountant | None = None
    tv_total: float = 0.0
    ledger_id: str = ""
    lines: int = 0
    last_hash: str = ""


def _read_lines(path: Path) -> tuple[list[bytes], bytes]:
    """Complete lines (without newline) and the torn remainder (b"" if none)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc.strerror}") from None
    parts = data.split(b"\n")
    return parts[:-1], parts[-1]


def _parse(line: bytes, no: int) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise LedgerError("entry longer than 1 MiB", no)
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LedgerError("not valid JSON (edited or corrupted)", no) from None
    if not isinstance(entry, dict):
        raise LedgerError("entry is not a JSON object", no)
    try:
        again = canonical_line(entry)
    except ValueError:
        raise LedgerError("entry holds a non-finite number", no) from None
    if again != line:
        raise LedgerError("entry is not in canonical form (edited)", no)
    return entry


LEDGER_ID_HEX = 32  # a ledger id is 16 random bytes, written as 32 lowercase hex digits


def _pin_id(expected_id: object) -> str | None:
    if expected_id is None:
        return None
    if not (isinstance(expected_id, str) and len(expected_id) == LEDGER_ID_HEX
            and all(c in "0123456789abcdefABCDEF" for c in expected_id)):
        raise ParameterError(f"expected_id must be a ledger id ({LEDGER_ID_HEX} hex digits), "
                             f"got {expected_id!r}")
    return expected_id.lower()


def verify(path: str | Path, public_key: str | bytes | None = None, *,
           independent: bool = True, expected_id: str | None = None,
           min_rounds: int | None = None,
           progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Check a whole ledger; raises LedgerError naming the first bad line.

    Checks, line by line: canonical JSON, sequence numbers, the hash chain, signatures
    (against ``public_key`` if given, else the key in the open entry, with a warning that it is
    not pinned), every cumulative epsilon and delta recomputed from the recorded events (by
    :class:`dp.crosscheck.LibraryAccountant` when ``independent``), the budget, the head file,
    and a torn last line. Malformed content of any kind is a LedgerError at its line, and so
    is any epsilon the accountants produce that is not a finite number within the budget
    (huge, infinite, NaN, beyond float range): no arithmetic exception escapes.

    Pins against rollback, for an auditor who recorded what an earlier audit saw:

    * ``expected_id``: the ledger id (the open entry's ``ledger_id``, 32 hex digits, printed by
      ``secagg budget show``). A different ledger signed with the same key -- an older,
      lower-epsilon one swapped in whole -- passes every other check; with the id pinned it
      is a LedgerError at line 1 naming both ids. The id is in the signed open entry, every
      round entry chains to it, and the signed head file names it, so it cannot be changed
      without the signing key.
    * ``min_rounds``: the number of rounds seen at the last audit. The head file reveals
      entries cut from the end, but not when the key holder (the server itself) cuts the file
      and writes and signs a new head: such a truncated ledger is self-consistent and passes
      every other check, including ``expected_id``. With ``min_rounds`` it is a LedgerError
      naming the round count found and the minimum. (Neither pin catches a key holder who cuts
      the history and appends different rounds up to the count: only a copy of the entries
      or of their hashes kept elsewhere does, see threat_model.md.)

    A malformed pin (not a 32-hex-digit string, not an int >= 0) is a ParameterError.
    ``progress(done, total)`` is called after each line checked (for a progress bar).
    """
    pin_id = _pin_id(expected_id)
    if min_rounds is not None and (isinstance(min_rounds, bool)
                                   or not isinstance(min_rounds, int) or min_rounds < 0):
        raise ParameterError(f"min_rounds must be an int >= 0, got {min_rounds!r}")
    where = [1]
    try:
        report = _verify(Path(path), public_key, independent, where, pin_id,
                         progress=progress)
    except LedgerError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, ArithmeticError,
            RecursionError) as exc:
        # ArithmeticError: OverflowError, ZeroDivisionError, decimal's InvalidOperation
        raise LedgerError(f"malformed content ({type(exc).__name__}: {exc})",
                          where[0]) from None
    if min_rounds is not None and report.entries < min_rounds:
        raise LedgerError(f"{report.entries} rounds where the pin requires at least "
                          f"{min_rounds} (history truncated, or an older copy of the ledger "
                          "restored)", report.lines + 1)
    return report


def _verify(  # noqa: PLR0912, PLR0915 - one pass over the lines, each check in order
    path: Path, public_key: str | bytes | None, independent: bool, where: list[int],
    pin_id: str | None = None, *, progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    lines, torn = _read_lines(path)
    warnings: list[str] = []
    if not lines:
        raise LedgerError("empty ledger (no open entry)", 1)
    opening = _parse(lines[0], 1)
    if opening.get("kind") != "open" or opening.get("seq") != 0 or opening.get("v") != VERSION:
        raise LedgerError("first entry is not an open entry of version 1", 1)
    if opening.get("prev") != GENESIS:
        raise LedgerError("open entry does not start the chain", 1)
    try:
        budget = Budget(**opening["budget"])
    except (KeyError, TypeError, ParameterError) as exc:
        raise LedgerError(f"bad budget in the open entry: {exc}", 1) from None
    name = opening.get("accountant", RDP_ONLY_NAME)
    if name not in ACCOUNTANTS:
        raise LedgerError(f"unknown accountant {name!r} in the open entry (known: "
                          f"{', '.join(ACCOUNTANTS)})", 1)
    with_gdp = name == ACCOUNTANT_NAME
    recorded_key = opening.get("public_key")
    pub = None
    if public_key is not None:
        pub = load_public_key(public_key)
        if recorded_key is not None and load_public_key(recorded_key).public_bytes_raw() != \
                pub.public_bytes_raw():
            raise LedgerError("the open entry names a different signing key", 1)
        if recorded_key is None:
            raise LedgerError("ledger is unsigned but a public key was given", 1)
    elif recorded_key is not None:
        pub = load_public_key(recorded_key)
        warnings.append("signatures checked against the key recorded in the ledger itself; "
                        "pass the server's public key to pin it")
    if independent:
        from .crosscheck import LibraryAccountant

        acc = LibraryAccountant(gdp=with_gdp)
    events: list[DpEvent] = []
    own = RdpAccountant(gdp=with_gdp)
    tv_total = 0.0
    rows = []
    prev_entry = None
    for i, line in enumerate(lines):
        no = i + 1
        where[0] = no
        entry = opening if i == 0 else _parse(line, no)
        body = {k: v for k, v in entry.items() if k != "signature"}
        if pub is not None and not _verify_sig(pub, body, entry.get("signature")):
            raise LedgerError("signature does not verify (entry edited or forged)", no)
        if pub is None and "signature" in entry:
            raise LedgerError("signature on an entry of an unsigned ledger", no)
        if i == 0:
            if pin_id is not None and entry.get("ledger_id") != pin_id:
                raise LedgerError(f"ledger id {entry.get('ledger_id')!r} is not the pinned "
                                  f"{pin_id!r} (another ledger swapped in: rollback or "
                                  "substitution)", no)
            prev_entry = line
            continue
        if entry.get("seq") != i:
            raise LedgerError(f"sequence number {entry.get('seq')!r} where {i} was expected "
                              "(an entry was deleted, inserted or reordered)", no)
        if entry.get("prev") != line_hash(prev_entry):
            raise LedgerError("entry edited: its hash no longer matches the next entry's "
                              "prev" if no > 2 else "open entry edited", no - 1)
        if entry.get("kind") != "round" or entry.get("v") != VERSION:
            raise LedgerError("not a round entry of version 1", no)
        try:
            event = from_json(entry["event"])
            tv = float(entry["sampler_tv"])
            rec_eps, rec_delta = float(entry["epsilon"]), float(entry["delta"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(f"malformed round entry: {exc}", no) from None
        if not (math.isfinite(tv) and tv >= 0):
            raise LedgerError("sampler_tv must be finite and >= 0", no)
        events.append(event)
        tv_total += tv
        try:
            # both accountants: overflow is +inf (np.errstate: no warning, so none raised by
            # -W error either); any exception, ArithmeticError included, is this line's fault
            with np.errstate(all="ignore"):
                d_rdp = delta_for_rdp(budget, tv_total)
                own.compose(event)
                if independent:
                    acc.compose(event)
                    eps = float(acc.get_epsilon(d_rdp))
                else:
                    eps = float(own.epsilon(d_rdp))
        except Exception as exc:  # noqa: BLE001 - any failure here is a bad entry
            raise LedgerError(f"event cannot be accounted: {type(exc).__name__}: {exc}",
                              no) from None
        if not math.isfinite(eps):
            raise LedgerError(f"event gives epsilon {eps} (a non-private release, or no "
                              "finite bound)", no)
        expect = round_up(eps, EPS_DIGITS)
        if not math.isclose(rec_eps, expect, rel_tol=1e-6, abs_tol=2 * 10**-EPS_DIGITS):
            raise LedgerError(f"recorded epsilon {rec_eps} differs from the recomputed "
                              f"{expect} (edited)", no)
        delta = fold_sampler_distance(eps, d_rdp, tv_total)
        if not delta * (1 - 1e-12) <= rec_delta <= delta * (1 + 1e-9):
            raise LedgerError(f"recorded delta {rec_delta} differs from the recomputed "
                              f"{delta:.6g} (edited)", no)
        if not (rec_eps <= budget.epsilon and eps <= budget.epsilon
                and delta <= budget.delta):  # written so that NaN fails
            raise LedgerError(f"over budget: epsilon {rec_eps} > {budget.epsilon} "
                              f"or delta {delta:.3g} > {budget.delta}", no)
        rows.append({"line": no, "session": entry.get("session"), "round": entry.get("round"),
                     "survivors": entry.get("survivors"), "cohort": entry.get("cohort"),
                     "epsilon": rec_eps, "delta": rec_delta,
                     "mechanism": entry.get("mechanism", {}).get("name")})
        prev_entry = line
        if progress is not None:
            progress(no, len(lines))
    where[0] = len(lines)
    if torn:
        raise LedgerError(f"incomplete entry (torn write: the writer stopped mid-append); "
                          f"the {len(lines)} entries before it verify", len(lines) + 1)
    _check_head(path, len(lines), line_hash(lines[-1]), ledger_id=opening.get("ledger_id"),
                pub=pub, warnings=warnings)
    eps_now = rows[-1]["epsilon"] if rows else 0.0
    delta_now = rows[-1]["delta"] if rows else 0.0
    return VerifyReport(len(rows), eps_now, delta_now, budget, pub is not None, warnings, rows,
                        own, tv_total, str(opening.get("ledger_id")), len(lines),
                        line_hash(lines[-1]))


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _check_head(path: Path, count: int, last: str, *, ledger_id: object, pub,
                warnings: list[str]) -> None:
    """The head file (entry count and last hash, bound to the ledger id, signed with its own
    label) reveals entries cut from the end. Every Ledger writes one, so a missing head is an
    error. An attacker who keeps an old signed head and cuts the file back to it is not caught
    here: keep a copy of the head elsewhere (threat_model.md)."""
    hp = _head_path(path)
    if not hp.exists():
        raise LedgerError(f"head file {hp.name} is missing: entries removed from the end "
                          "cannot be ruled out", count)
    try:
        head = json.loads(hp.read_bytes())
        entries, digest, hid = int(head["entries"]), str(head["hash"]), head["ledger_id"]
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        raise LedgerError(f"head file {hp.name} is unreadable", count) from None
    if hid != ledger_id:
        raise LedgerError(f"head file {hp.name} belongs to another ledger", count)
    if pub is not None:
        body = {k: v for k, v in head.items() if k != "signature"}
        if not _verify_sig(pub, body, head.get("signature"), HEAD_LABEL):
            raise LedgerError(f"head file {hp.name} signature does not verify", count)
    if entries > count:
        raise LedgerError(f"{entries - count} entries deleted from the end (the head file "
                          f"records {entries} lines)", count + 1)
    if entries == count and digest != last:
        raise LedgerError("last entry edited (its hash differs from the head file)", count)
    if entries < count - 1:
        raise LedgerError(f"head file is {count - entries} entries behind", entries + 1)
    if entries == count - 1:
        warnings.append("head file is one entry behind (a crash between the entry and the "
                        "head update)")


class Ledger:
    """An open ledger: verified on open, appended durably, with a budget filter.

    One writer at a time: the ledger holds an exclusive lock (``LEDGER.lock``, flock) from
    create/open until :meth:`close`, so two servers cannot both pass the budget filter against
    the same history. A failed write leaves the ledger unusable until it is reopened (and so
    re-verified from disk), instead of letting the memory and the file drift apart.
    """

    def __init__(self, path: Path, budget: Budget, key: Ed25519PrivateKey | None, *,
                 accountant: RdpAccountant, tv_total: float, count: int, last: str,
                 ledger_id: str, lock: int) -> None:
        self.path, self.budget, self._key = path, budget, key
        self._acc, self._tv, self._count, self._last = accountant, tv_total, count, last
        self.ledger_id, self._lock, self._broken = ledger_id, lock, False

    def close(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)  # releases the flock
            self._lock = -1

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @classmethod
    def create(cls, path: str | Path, budget: Budget, *, owner: str = "server",
               signing_key: Ed25519PrivateKey | None = None) -> Ledger:
        path = Path(path)
        if path.exists():
            raise LedgerError(f"{path} already exists; open it instead")
        lock = _lock(path)
        entry = {"v": VERSION, "seq": 0, "kind": "open", "prev": GENESIS, "owner": str(owner),
                 "ledger_id": os.urandom(16).hex(), "created": _now(),
                 "budget": {"epsilon": float(budget.epsilon), "delta": float(budget.delta)},
                 "accountant": ACCOUNTANT_NAME,
                 "public_key": public_key_hex(signing_key) if signing_key else None}
        if signing_key is not None:
            entry["signature"] = _sign(signing_key, entry)
        line = canonical_line(entry)
        # Crash-safe creation: the open line goes to a temporary file, the head is written,
        # and only then is the ledger linked into place (link fails if the name exists). A
        # crash before the link leaves no ledger, and create can simply be run again.
        tmp = path.with_name(path.name + ".new")
        ledger = cls(path, budget, signing_key, accountant=RdpAccountant(), tv_total=0.0,
                     count=1, last=line_hash(line), ledger_id=entry["ledger_id"], lock=lock)
        try:
            with open(tmp, "wb") as f:
                f.write(line + b"\n")
                f.flush()
                os.fsync(f.fileno())
            ledger._write_head()
            os.link(tmp, path)
        except OSError as exc:
            ledger.close()
            raise LedgerError(f"cannot create {path}: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path)
        return ledger

    @classmethod
    def open(cls, path: str | Path, *, signing_key: Ed25519PrivateKey | None = None,
             repair: bool = False) -> Ledger:
        """Open for appending; verifies the whole file first (own accountant)."""
        path = Path(path)
        if not path.exists():
            raise LedgerError(f"cannot read ledger {path}: no such file")
        lock = _lock(path)
        try:
            return cls._open_locked(path, signing_key, repair, lock)
        except BaseException:
            os.close(lock)
            raise

    @classmethod
    def _open_locked(cls, path: Path, signing_key: Ed25519PrivateKey | None, repair: bool,
                     lock: int) -> Ledger:
        lines, torn = _read_lines(path)
        if torn and repair:
            keep = sum(len(x) + 1 for x in lines)
            with open(path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        pub = public_key_hex(signing_key) if signing_key is not None else None
        report = verify(path, pub, independent=False)
        if signing_key is None and report.signed:
            raise LedgerError("ledger is signed: open it with its signing key")
        return cls(path, report.budget, signing_key, accountant=report.accountant,
                   tv_total=report.tv_total, count=report.lines, last=report.last_hash,
                   ledger_id=report.ledger_id, lock=lock)

    # -- budget filter ---------------------------------------------------------------------
    @property
    def rounds(self) -> int:
        return self._count - 1

    def spent(self) -> tuple[float, float]:
        """Cumulative (epsilon, delta) so far."""
        if not self._acc.events:
            return 0.0, 0.0
        d = delta_for_rdp(self.budget, self._tv)
        eps = float(self._acc.epsilon(d))
        return eps, float(fold_sampler_distance(eps, d, self._tv))

    def check(self, event: DpEvent, sampler_tv: float = 0.0) -> tuple[float, float]:
        """(epsilon, delta) after ``event``; raises BudgetExceeded if over the budget.

        Whatever epsilon the accountant produces -- huge but finite (a noise multiplier of
        1e-12 gives ~1e24), +inf, NaN, an RDP beyond float range -- the answer is a number
        within the budget or BudgetExceeded, never an arithmetic exception. An event the
        accountant does not support is AccountingError; a ``sampler_tv`` that is not a
        finite number >= 0 is AccountingError too."""
        try:
            tv_round = float(sampler_tv)
        except (TypeError, ValueError):
            tv_round = math.nan
        if not (math.isfinite(tv_round) and tv_round >= 0):
            raise AccountingError(f"sampler_tv must be a finite number >= 0, got "
                                  f"{sampler_tv!r}")
        tv = self._tv + tv_round
        d = delta_for_rdp(self.budget, tv)
        try:
            with np.errstate(all="ignore"):
                eps = float(self._acc.epsilon_after(event, d))
            # compare what will be written (epsilon rounded up), so the ledger always verifies
            fits = math.isfinite(eps) and round_up(eps, EPS_DIGITS) <= self.budget.epsilon
            delta = fold_sampler_distance(eps, d, tv) if fits else math.inf
        except ArithmeticError as exc:  # belt and braces: no float failure escapes the filter
            raise BudgetExceeded(f"round refused: epsilon cannot be computed "
                                 f"({type(exc).__name__}) after {self.rounds} rounds") from None
        if not (fits and delta <= self.budget.delta):  # written so that NaN is refused
            raise BudgetExceeded(f"round refused: cumulative epsilon would be {_fmt(eps)} "
                                 f"(budget {self.budget.epsilon}) after {self.rounds} rounds")
        _independently_accountable(event, d)
        return eps, delta

    def record_round(self, *, event: DpEvent, session: str, round: int, cohort: int,
                     survivors: int | None, n_min: int, clip_norm: float, mechanism: dict[str, Any],
                     sampler_tv: float, model_hash: str | None = None,
                     record_level: dict[str, Any] | None = None) -> dict[str, Any]:
        """Append one round (after the budget check); returns the entry written.

        Call it before the round's result is released (write-ahead): the server before it
        requests unmasking shares, a client before its masked input leaves it (a client does
        not know the survivors then: ``survivors=None``)."""
        if self._broken or self._lock < 0:
            raise LedgerError("ledger closed or left inconsistent by a failed write; reopen it")
        eps, delta = self.check(event, sampler_tv)
        entry = {"v": VERSION, "seq": self._count, "kind": "round", "prev": self._last,
                 "time": _now(), "session": str(session), "round": int(round),
                 "cohort": int(cohort),
                 "survivors": None if survivors is None else int(survivors),
                 "n_min": int(n_min),
                 "clip_norm": float(clip_norm), "mechanism": mechanism,
                 "event": to_json(event), "sampler_tv": float(sampler_tv),
                 "epsilon": round_up(eps, EPS_DIGITS), "delta": float(delta),
                 "accountant": {"name": self._acc.name, "versions": versions()},
                 "model_hash": model_hash, "record_level": record_level}
        if self._key is not None:
            entry["signature"] = _sign(self._key, entry)
        line = canonical_line(entry)
        if len(line) > MAX_LINE:
            raise LedgerError("entry longer than 1 MiB")
        self._broken = True  # until the line and the head are durably written
        with open(self.path, "ab") as f:
            f.write(line + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._acc.compose(event)
        self._tv += sampler_tv
        self._count += 1
        self._last = line_hash(line)
        self._write_head()
        self._broken = False
        return entry

    def _write_head(self) -> None:
        head: dict[str, Any] = {"entries": self._count, "hash": self._last,
                                "ledger_id": self.ledger_id}
        if self._key is not None:
            head["signature"] = _sign(self._key, head, HEAD_LABEL)
        hp = _head_path(self.path)
        tmp = hp.with_name(hp.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(canonical_line(head) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, hp)
        _fsync_dir(hp)


def open_ledger(path: str | Path, budget: Budget, key: Ed25519PrivateKey | None = None,
                owner: str = "server") -> Ledger:
    """The one way every caller (simulation, server, client) gets its ledger: opened and
    verified if ``path`` exists, created for ``budget`` and ``owner`` otherwise.

    Raises :class:`BudgetMismatch` if the ledger at ``path`` was created for another budget,
    and :class:`LedgerError` if it does not verify (or is signed and ``key`` is missing)."""
    path = Path(path)
    if not path.exists():
        return Ledger.create(path, budget, owner=owner, signing_key=key)
    ledger = Ledger.open(path, signing_key=key)  # verifies the whole history
    got = ledger.budget
    if (got.epsilon, got.delta) != (float(budget.epsilon), float(budget.delta)):
        ledger.close()
        raise BudgetMismatch(f"the ledger {path} was created for the budget (epsilon "
                             f"{got.epsilon}, delta {got.delta}), the configuration says "
                             f"(epsilon {budget.epsilon}, delta {budget.delta}); start a new "
                             "ledger or restore the configured budget")
    return ledger


def _independently_accountable(event: DpEvent, delta: float) -> None:
    """Refuse (AccountingError) an event that the auditor's independent accountant cannot
    account (dp_accounting overflows on absurd noise, e.g. a noise multiplier of 1e155): a
    round the filter accepted must be one that ``verify`` can check."""
    from .crosscheck import LibraryAccountant

    acc = LibraryAccountant()
    try:
        with np.errstate(all="ignore"):
            acc.compose(event)
            eps = float(acc.get_epsilon(delta))
    except Exception as exc:  # noqa: BLE001 - any failure means verify would fail on it
        raise AccountingError(f"the independent accountant cannot account this event "
                              f"({type(exc).__name__}); refused so that the ledger stays "
                              "verifiable") from None
    if math.isnan(eps):
        raise AccountingError("the independent accountant gives no epsilon for this event")


def _lock(path: Path) -> int:
    """An exclusive, non-blocking flock on LEDGER.lock (kept open while the ledger is)."""
    import fcntl

    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LedgerError(f"{path} is open for writing elsewhere (lock held)") from None
    return fd


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
