"""`secagg budget report`: the self-contained HTML audit report of dp/report.py for valid and
tampered ledgers, the escaping of ledger content, the command's exit codes, and the page as
Chromium renders it (a screenshot decoded here with zlib and struct, and the rendered DOM)."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from importlib import metadata
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dp.accounting import ACCOUNTANT_NAME
from dp.errors import LedgerError
from dp.events import SkellamDpEvent
from dp.ledger import Budget, Ledger, canonical_line, line_hash, public_key_hex, verify
from dp.report import (
    BUDGET_ORANGE,
    CURVE_BLUE,
    FAILED_RED,
    VALID_GREEN,
    ReportError,
    audit,
    render_report,
)
from protocol.cli import main

# Skellam, B = 40, noise multiplier 2.5: 5 rounds spend about 4.16 of a budget of 6 at 1e-5
EVENT = SkellamDpEvent(1600.0, 40.0, (2.5 * 40.0) ** 2)
BUDGET = Budget(6.0, 1e-5)
ROUNDS = 5
MECHANISM = {"name": "skellam", "gamma": 64.0, "bits": 32, "l2_sensitivity": 40.0,
             "noise_multiplier": 2.5, "local_variance": 1250.0}
SCRIPT = '<script>alert("ledger")</script>'


def make_ledger(path: Path, *, key=None, rounds: int = ROUNDS, owner: str = "server",
                session: str = "5e55" * 8, mechanism: dict | None = None,
                record_level: dict | None = None) -> Path:
    led = Ledger.create(path, BUDGET, owner=owner, signing_key=key)
    for i in range(rounds):
        led.record_round(event=EVENT, session=session, round=i, cohort=10, survivors=9,
                         n_min=8, clip_norm=1.0, mechanism=mechanism or MECHANISM,
                         sampler_tv=1e-30, model_hash="ab" * 32, record_level=record_level)
    led.close()
    return path


def head(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def copy(src: Path, dst_dir: Path, name: str = "copy.jsonl") -> Path:
    dst = dst_dir / name
    shutil.copyfile(src, dst)
    shutil.copyfile(head(src), head(dst))
    return dst


def edit_line(path: Path, no: int, old: bytes, new: bytes) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    assert old in lines[no - 1]
    lines[no - 1] = lines[no - 1].replace(old, new, 1)
    path.write_bytes(b"".join(lines))


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A signed ledger of 5 rounds: (path, public key hex, ledger id)."""
    key = Ed25519PrivateKey.generate()
    path = make_ledger(tmp_path_factory.mktemp("signed") / "ledger.jsonl", key=key)
    ledger_id = json.loads(path.read_bytes().splitlines()[0])["ledger_id"]
    return path, public_key_hex(key), ledger_id


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """A valid unsigned ledger whose strings hold markup (the ledger is untrusted input)."""
    return make_ledger(tmp_path_factory.mktemp("scripted") / "<i>ledger.jsonl",
                       owner=SCRIPT, session='<img src=x onerror="alert(1)">',
                       mechanism={**MECHANISM, "name": "<script>alert('mech')</script>",
                                  "</td><script>": 1},
                       record_level={"note": "<b>bold</b>"})


def rows_shown(page: str) -> list[int]:
    """The ledger lines of the rows of the rounds table."""
    return [int(n) for n in re.findall(r'<tr(?: class="bad")?><td class="n">(\d+)', page)]


# --------------------------------------------------------------------------------------------
# The HTML
# --------------------------------------------------------------------------------------------


def test_valid_report_names_every_check(signed):
    path, pub, ledger_id = signed
    page = render_report(path, pub, expected_id=ledger_id, min_rounds=ROUNDS)
    report = verify(path, pub, expected_id=ledger_id, min_rounds=ROUNDS)
    assert 'class="banner valid"' in page and "FAILED" not in page
    assert f"{ROUNDS} rounds; cumulative epsilon {report.epsilon:.6f}" in page
    assert ledger_id in page and report.last_hash in page
    assert f"the pinned key (<code>--public-key</code>) <span class=\"mono\">{pub}" in page
    assert "every line and the head file verify" in page
    assert "ledger.jsonl.head</code> (signed) records 6 lines" in page
    assert f'--ledger-id</code> <span class="mono">{ledger_id}</span>: matches' in page
    assert f"--min-rounds</code> {ROUNDS}: {ROUNDS} rounds found" in page
    # the independent accountant, named as dp/ledger.py's verify and dp/crosscheck.py have it
    assert "dp.crosscheck.LibraryAccountant: dp_accounting&#x27;s RdpAccountant" in page
    assert f"dp-accounting {metadata.version('dp-accounting')}" in page
    assert f"--ledger-id {ledger_id} --min-rounds {ROUNDS}" in page  # for the next audit
    # one row per round, each epsilon recorded and recomputed alike, one marker per round
    assert rows_shown(page) == list(range(2, ROUNDS + 2))
    for row in report.rows:  # recorded, then recomputed
        e = f"{row['epsilon']:.6f}"
        assert f'<td class="n">{e}</td><td class="n">{e}</td>' in page
    assert page.count("<circle") == ROUNDS and "<svg" in page
    # the deployment: the open entry and the versions the rounds record
    opening = json.loads(path.read_bytes().splitlines()[0])
    assert f"<td>{opening['created']}</td>" in page and "<td>server</td>" in page
    assert "<th>Budget epsilon</th><td>6</td>" in page and "<td>1e-05</td>" in page
    assert f"lines 2&ndash;{ROUNDS + 1}: {ACCOUNTANT_NAME}: cryptography" in page
    assert f"numpy {metadata.version('numpy')}" in page


def test_signatures_against_the_ledgers_own_key_are_named_as_unpinned(signed):
    path, pub, _ = signed
    page = render_report(path)
    assert "the key recorded in the ledger's own open entry" in page and pub in page
    assert "not pinned" in page and "Warnings" in page
    assert "--ledger-id</code> not given" in page and "--min-rounds</code> not given" in page


def test_unsigned_ledger_says_so(scripted):
    page = render_report(scripted)
    assert 'class="banner valid"' in page and "unsigned ledger: no signatures" in page


def test_tampered_report_names_the_first_bad_line_and_keeps_the_rows_before(signed, tmp_path):
    path, pub, _ = signed
    bad = copy(path, tmp_path)
    edit_line(bad, 3, b'"survivors":9', b'"survivors":1')
    with pytest.raises(LedgerError) as want:
        verify(bad, pub)
    assert want.value.line == 3
    result = audit(bad, pub)
    assert result.report is None and str(result.error) == str(want.value)
    page = result.html
    assert 'class="banner failed"' in page and 'class="banner valid"' not in page
    assert "FAILED: first bad line: line 3" in page and html.escape(want.value.reason) in page
    assert rows_shown(page) == [2, 3]  # line 2 read and checked, line 3 flagged, no later line
    assert '<tr class="bad"><td class="n">3<div class="flag badtext">first bad line' in page
    assert page.count("<circle") == 1  # only the round before the bad line is drawn
    assert "Only the rounds before the first bad line are drawn" in page


def _cut_last_entry(p: Path, **_) -> dict:
    lines = p.read_bytes().splitlines(keepends=True)
    p.write_bytes(b"".join(lines[:-1]))
    return {}


def _drop_head(p: Path, **_) -> dict:
    head(p).unlink()
    return {}


def _torn(p: Path, **_) -> dict:
    with open(p, "ab") as f:
        f.write(b'{"v":1,"kind":"ro')
    return {}


FAILURES = {
    "signature of an edited open entry": (
        lambda p, **_: edit_line(p, 1, b'"owner":"server"', b'"owner":"served"') or {}, 1),
    "entry cut from the end": (_cut_last_entry, ROUNDS + 1),
    "head file missing": (_drop_head, ROUNDS + 1),
    "torn last line": (_torn, ROUNDS + 2),
    "history below --min-rounds": (lambda p, **_: {"min_rounds": ROUNDS + 1}, ROUNDS + 2),
    "another ledger id": (lambda p, **_: {"expected_id": "0" * 32}, 1),
    "another key": (lambda p, **_: {"public_key": public_key_hex(
        Ed25519PrivateKey.generate())}, 1),
}


@pytest.mark.parametrize("case", FAILURES)
def test_every_failure_is_reported_as_verify_reports_it(signed, tmp_path, case):
    path, pub, _ = signed
    bad = copy(path, tmp_path)
    change, line = FAILURES[case]
    pins = {"public_key": pub, **change(bad)}  # the file edited, or the pins to verify with
    with pytest.raises(LedgerError) as want:
        verify(bad, **pins)
    assert want.value.line == line
    result = audit(bad, **pins)
    assert result.error is not None and str(result.error) == str(want.value)
    page = result.html
    assert f"FAILED: first bad line: line {line}" in page
    assert html.escape(want.value.reason) in page and 'class="banner valid"' not in page
    assert all(n <= line for n in rows_shown(page))


def test_missing_ledger_gets_a_failed_report(tmp_path):
    result = audit(tmp_path / "none.jsonl")
    assert result.error is not None and result.error.line is None
    assert 'class="banner failed" id="status">FAILED<' in result.html
    assert "cannot read ledger" in result.html and rows_shown(result.html) == []


def test_markup_in_the_ledger_is_rendered_as_text(scripted, tmp_path):
    page = render_report(scripted)
    assert 'class="banner valid"' in page
    assert "<script" not in page.lower() and "<img" not in page and "<b>" not in page
    assert "<i>" not in page  # the file name is escaped too
    assert html.escape(SCRIPT) in page  # &lt;script&gt;alert(&quot;ledger&quot;)&lt;/script&gt;
    assert "&lt;script&gt;alert(&#x27;mech&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror" in page
    assert "&quot;&lt;/td&gt;&lt;script&gt;&quot;: 1" in page  # a key, in the whole entry
    # and in the flagged row of a ledger edited to carry markup
    bad = copy(scripted, tmp_path)
    edit_line(bad, ROUNDS + 1, b'"cohort":10', b'"cohort":"<script>x</script>"')
    page = render_report(bad)
    assert f"FAILED: first bad line: line {ROUNDS + 1}" in page
    assert "<script" not in page.lower() and "&lt;script&gt;x&lt;/script&gt;" in page


def test_a_line_that_is_not_json_is_flagged_and_shown_escaped(scripted, tmp_path):
    bad = copy(scripted, tmp_path)
    lines = bad.read_bytes().splitlines(keepends=True)
    lines[2] = b"<script>alert(1)</script> not JSON\n"
    bad.write_bytes(b"".join(lines))
    result = audit(bad)
    assert result.error is not None and result.error.line == 3
    assert "not valid JSON" in result.error.reason and rows_shown(result.html) == [2, 3]
    assert "not a JSON object: cannot be read" in result.html
    assert "<script" not in result.html and "&lt;script&gt;alert(1)&lt;/script&gt; not JSON" \
        in result.html


def test_a_ledger_appended_to_during_the_report_is_not_shown_as_verified(scripted, tmp_path,
                                                                        monkeypatch):
    import dp.report

    path = copy(scripted, tmp_path)
    real = dp.report.verify

    def append_then_verify(*args, **kwargs):  # a writer appends between the two reads
        with Ledger.open(path) as led:
            led.record_round(event=EVENT, session="s", round=9, cohort=10, survivors=9, n_min=8,
                             clip_norm=1.0, mechanism=MECHANISM, sampler_tv=0.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(dp.report, "verify", append_then_verify)
    result = audit(path)
    assert result.report is None and "changed while the report was made" in result.html
    assert 'class="banner valid"' not in result.html and rows_shown(result.html) == []


EXTERNAL = re.compile(r"\b(?:src|href|xlink:href|action|srcset|poster|data)\s*=|url\(|@import|"
                      r"https?:|<(?:link|img|iframe|object|embed|script|base|form)\b", re.I)


@pytest.mark.parametrize("tamper", [False, True])
def test_report_is_self_contained(signed, tmp_path, tamper):
    path, pub, _ = signed
    if tamper:
        path = copy(path, tmp_path)
        edit_line(path, 2, b'"round":0', b'"round":7')
    page = render_report(path, pub)
    assert EXTERNAL.search(page) is None, EXTERNAL.search(page)
    assert "<svg " in page and "<style>" in page  # the plot and the styles are inline
    assert "Content-Security-Policy\" content=\"default-src 'none';" in page


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_command_writes_the_report_and_exits_0(signed, tmp_path, capsys):
    path, pub, ledger_id = signed
    out = tmp_path / "report.html"
    assert main(["budget", "report", str(path), "--public-key", pub, "--ledger-id", ledger_id,
                 "--min-rounds", str(ROUNDS), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert 'class="banner valid"' in out.read_text(encoding="utf-8")


def test_default_output_is_beside_the_ledger(signed, tmp_path, capsys):
    path = copy(signed[0], tmp_path, "audit.jsonl")
    assert main(["budget", "report", str(path)]) == 0
    assert (tmp_path / "audit.jsonl.html").exists()
    assert "warning: signatures checked against the key recorded" in capsys.readouterr().err


def test_command_on_a_tampered_ledger_writes_the_report_and_exits_1(signed, tmp_path, capsys):
    path, pub, _ = signed
    bad = copy(path, tmp_path)
    edit_line(bad, 3, b'"survivors":9', b'"survivors":1')
    out = tmp_path / "bad.html"
    assert main(["budget", "report", str(bad), "--public-key", pub, "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "INVALID: line 3: signature does not verify" in captured.err
    assert "FAILED report" in captured.out
    assert "FAILED: first bad line: line 3" in out.read_text(encoding="utf-8")
    missing = tmp_path / "none.jsonl"
    assert main(["budget", "report", str(missing)]) == 1
    assert "cannot read ledger" in (tmp_path / "none.jsonl.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv", [["--min-rounds", "-1"], ["--ledger-id", "zz"], ["--frob"]])
def test_bad_usage_exits_2(signed, argv):
    with pytest.raises(SystemExit) as e:
        main(["budget", "report", str(signed[0]), *argv])
    assert e.value.code == 2


def test_output_over_the_ledger_is_refused_with_2(signed, tmp_path, capsys):
    path = copy(signed[0], tmp_path)
    before = path.read_bytes(), head(path).read_bytes()
    assert main(["budget", "report", str(path), "-o", str(path)]) == 2
    assert main(["budget", "report", str(path), "-o", str(head(path))]) == 2
    assert "would overwrite the ledger" in capsys.readouterr().err
    assert (path.read_bytes(), head(path).read_bytes()) == before


def test_help_gives_every_option_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["budget", "report", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (("--public-key", "(default: the key recorded in the ledger"),
                            ("--ledger-id", "(default: not pinned)"),
                            ("--min-rounds", "(default: not pinned)"),
                            ("--output", "(default: LEDGER.html")):
        assert option in text and default in text, option


def test_report_of_a_simulated_ledger(tmp_path, capsys):
    path = tmp_path / "sim.jsonl"
    assert main(["simulate", "--clients", "12", "--dim", "100", "--rounds", "2", "--epsilon",
                 "3", "--delta", "1e-5", "--ledger", str(path), "--seed", "4"]) == 0
    assert main(["budget", "report", str(path)]) == 0
    page = (tmp_path / "sim.jsonl.html").read_text(encoding="utf-8")
    assert rows_shown(page) == [2, 3] and "<td>skellam</td>" in page
    assert "event skellam(l1_sensitivity=" in page and "<td>simulation</td>" in page


# --------------------------------------------------------------------------------------------
# In a real browser
# --------------------------------------------------------------------------------------------

WINDOW = (1200, 1600)
BROWSER_TIMEOUT = 60  # seconds; the browser is killed (its whole process group) after it


@pytest.fixture(scope="module")
def chromium():
    exe = shutil.which("chromium")  # /usr/bin/chromium, Debian's package "chromium"
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed, and CI=true: the browser test must run "
                        "(.ci/run installs Debian's chromium package)")
        pytest.skip("chromium (Debian package `chromium`, /usr/bin/chromium) is not installed: "
                    "the report is not checked in a browser")
    return exe


def browse(exe: str, page: Path, tmp_path: Path) -> tuple[tuple[int, int, list[bytes], int], str]:
    """Chromium's screenshot (decoded) and rendered DOM of ``page``."""
    shot = tmp_path / "shot.png"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--dump-dom", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           page.resolve().as_uri()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group, killed as one
    try:
        dom, err = proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT} s")
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert shot.exists(), err.decode(errors="replace")[-2000:]
    return decode_png(shot.read_bytes()), dom.decode()


def decode_png(data: bytes) -> tuple[int, int, list[bytes], int]:
    """(width, height, rows, bytes per pixel) of a non-interlaced 8-bit RGB or RGBA PNG, with
    the standard library only: chunks by struct, zlib, then the five PNG row filters."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    assert ihdr is not None
    width, height, depth, colour, _, _, interlace = ihdr
    assert depth == 8 and colour in (2, 6) and interlace == 0, ihdr
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    low, high = int.from_bytes(b"\x7f" * stride, "big"), int.from_bytes(b"\x80" * stride, "big")

    def add(x: int, y: int) -> int:  # bytewise (x + y) mod 256 of two rows held as integers
        return ((x & low) + (y & low)) ^ ((x ^ y) & high)

    prev, rows = bytes(stride), []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 1:  # Sub: a prefix sum along the row, in log2(width) whole-row additions
            acc, shift = int.from_bytes(line, "big"), bpp
            while shift < stride:
                acc = add(acc, acc >> (8 * shift))
                shift *= 2
            line = acc.to_bytes(stride, "big")
        elif kind == 2:  # Up
            line = add(int.from_bytes(line, "big"), int.from_bytes(prev, "big")).to_bytes(
                stride, "big")
        elif kind in (3, 4):
            line = _average(line, prev, bpp) if kind == 3 else _paeth(line, prev, bpp)
        else:
            assert kind == 0, f"unknown PNG filter {kind}"
        rows.append(line)
        prev = line
    return width, height, rows, bpp


def _average(line: bytes, prev: bytes, bpp: int) -> bytes:
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        out[i] = (out[i] + ((left + prev[i]) >> 1)) & 255
    return bytes(out)


def _paeth(line: bytes, prev: bytes, bpp: int) -> bytes:
    out = bytearray(line)
    for i in range(bpp):  # no left neighbour: the predictor is the byte above
        out[i] = (out[i] + prev[i]) & 255
    for i in range(bpp, len(out)):
        a, b, c = out[i - bpp], prev[i], prev[i - bpp]
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - c - c)
        out[i] = (out[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return bytes(out)


def pixels(image, colours: dict[str, str]) -> dict[str, list[tuple[int, int]]]:
    """Where each named colour (#rrggbb) is, exactly, in the decoded image: [(x, y), ...]."""
    _, _, rows, bpp = image
    want = {bytes.fromhex(c[1:]): name for name, c in colours.items()}
    # a lookahead finds overlapping matches too; only those on a pixel boundary count
    pattern = re.compile(b"(?=(" + b"|".join(re.escape(c) for c in want) + b"))")
    found: dict[str, list[tuple[int, int]]] = {name: [] for name in colours}
    for y, row in enumerate(rows):
        for m in pattern.finditer(row):
            if m.start() % bpp == 0:
                found[want[m.group(1)]].append((m.start() // bpp, y))
    return found


COLOURS = {"green": VALID_GREEN, "red": FAILED_RED, "curve": CURVE_BLUE,
           "budget": BUDGET_ORANGE}
BANNER = 120  # the banner fills the top of the page, about 90 px at this window size


def test_browser_shows_a_valid_report(chromium, scripted, tmp_path):
    page = tmp_path / "valid.html"
    assert main(["budget", "report", str(scripted), "-o", str(page)]) == 0
    image, dom = browse(chromium, page, tmp_path)
    assert image[:2] == WINDOW
    # the rendered text: the banner, and the ledger's markup as text, never as elements
    assert 'id="status">VALID' in dom and "FAILED" not in dom
    assert "<script" not in dom.lower() and "<img" not in dom
    assert "&lt;script&gt;alert(\"ledger\")&lt;/script&gt;" in dom
    found = pixels(image, COLOURS)
    green, curve, budget = found["green"], found["curve"], found["budget"]
    # a green banner across the top, and no red anywhere
    assert len(green) > 0.5 * WINDOW[0] * 60, len(green)
    assert max(y for _, y in green) < BANNER and found["red"] == []
    # the budget line: one long dashed horizontal line, below the banner
    rows: dict[int, int] = {}
    for _, y in budget:
        rows[y] = rows.get(y, 0) + 1
    budget_y = [y for y, n in rows.items() if n > 400]
    assert budget_y and min(budget_y) > BANNER, sorted(rows.items())[:10]
    # the epsilon staircase: below the budget line (within the budget), rising to the right
    assert len(curve) > 1000, len(curve)
    assert min(y for _, y in curve) > max(budget_y)
    xs = sorted(x for x, _ in curve)
    lo, hi = xs[0], xs[-1]
    assert hi - lo > 600  # it spans the plot's width
    left = [y for x, y in curve if x < lo + (hi - lo) / 5]
    right = [y for x, y in curve if x > hi - (hi - lo) / 5]
    assert sum(left) / len(left) > sum(right) / len(right) + 50  # higher epsilon on the right


def test_browser_shows_a_tampered_report(chromium, signed, tmp_path):
    path, pub, _ = signed
    bad = copy(path, tmp_path)
    edit_line(bad, 4, b'"survivors":9', b'"survivors":1')
    page = tmp_path / "failed.html"
    assert main(["budget", "report", str(bad), "--public-key", pub, "-o", str(page)]) == 1
    image, dom = browse(chromium, page, tmp_path)
    assert 'id="status">FAILED: first bad line: line 4' in dom
    assert "signature does not verify" in dom
    found = pixels(image, COLOURS)
    red = found["red"]
    assert len(red) > 0.5 * WINDOW[0] * 60 and max(y for _, y in red) < BANNER
    assert found["green"] == []  # the red banner, and not the green one
    assert len(found["curve"]) > 300 and len(found["budget"]) > 400  # the rounds before line 4


# --------------------------------------------------------------------------------------------
# Hostile ledgers: the report renders, or fails as one typed error, never with a traceback
# --------------------------------------------------------------------------------------------


def rechain(path: Path, edit) -> Path:
    """``edit(entries)`` applied to the entries of the unsigned ledger at ``path``, the hash
    chain and the head file rewritten so that the result verifies if its values do."""
    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    edit(entries)
    lines: list[bytes] = []
    for i, entry in enumerate(entries):
        if i:
            entry["prev"] = line_hash(lines[-1])
        lines.append(canonical_line(entry))
    path.write_bytes(b"\n".join(lines) + b"\n")
    head(path).write_text(json.dumps({"entries": len(lines), "hash": line_hash(lines[-1]),
                                      "ledger_id": entries[0]["ledger_id"]}))
    return path


def test_a_budget_near_the_float_limit_is_reported_and_not_drawn(tmp_path, capsys):
    path = tmp_path / "huge.jsonl"
    Ledger.create(path, Budget(1.7e308, 1e-5)).close()  # valid: verify says so
    verify(path)
    result = audit(path)
    assert result.error is None and 'class="banner valid"' in result.html
    assert "budget epsilon 1.7e+308 beyond the scale: not drawn" in result.html  # in the plot
    assert "The budget epsilon 1.7e+308 is beyond the plot's scale" in result.html  # caption
    assert f'stroke="{BUDGET_ORANGE}"' not in result.html  # no line drawn off the scale
    # with rounds too: the staircase is drawn, the budget line is not
    rounds = make_ledger_with(tmp_path / "huge_rounds.jsonl", Budget(1.7e308, 1e-5))
    page = render_report(rounds)
    assert page.count("<circle") == ROUNDS and f'stroke="{BUDGET_ORANGE}"' not in page
    assert main(["budget", "report", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {path}.html"


def make_ledger_with(path: Path, budget: Budget) -> Path:
    led = Ledger.create(path, budget)
    for i in range(ROUNDS):
        led.record_round(event=EVENT, session="s", round=i, cohort=10, survivors=9, n_min=8,
                         clip_norm=1.0, mechanism=MECHANISM, sampler_tv=0.0)
    led.close()
    return path


def test_the_plot_scale_is_finite_whatever_it_is_given():
    from dp.report import _nice_step, _svg

    for span in (math.inf, -math.inf, math.nan, 0.0, -1.0):
        assert _nice_step(span) == 1.0
    svg = _svg([(1, 2.0)], 1, None, "budget epsilon 1.7e+308 beyond the scale: not drawn")
    assert "<circle" in svg and "beyond the scale" in svg


def test_a_budget_epsilon_too_large_for_a_float_fails_as_verify_fails(scripted, tmp_path,
                                                                     capsys):
    path = rechain(copy(scripted, tmp_path),
                   lambda e: e[0]["budget"].update(epsilon=10**400))
    with pytest.raises(LedgerError) as want:
        verify(path)
    assert want.value.line == 1 and "OverflowError" in want.value.reason
    result = audit(path)
    assert str(result.error) == str(want.value)
    assert "FAILED: first bad line: line 1" in result.html
    digits = str(10**400)
    assert f"<th>Budget epsilon</th><td>{digits[:300]} \u2026 (101 more characters)</td>" \
        in result.html  # the value shown as text, its length bounded
    out = tmp_path / "big.html"
    assert main(["budget", "report", str(path), "-o", str(out)]) == 1
    assert "INVALID: line 1: malformed content (OverflowError" in capsys.readouterr().err
    assert "FAILED: first bad line: line 1" in out.read_text(encoding="utf-8")


def test_a_file_name_that_is_not_utf8_and_lone_surrogates_are_written(tmp_path, capsys):
    path = make_ledger(tmp_path / "bad\udcff.jsonl", owner="\ud800 owner",
                       session="\udfff session")  # JSON escapes: lone surrogates when read
    verify(path)
    assert main(["budget", "report", str(path)]) == 0
    out = tmp_path / "bad\udcff.jsonl.html"
    page = out.read_bytes().decode("utf-8")  # strictly: the page is UTF-8
    assert "<title>Privacy ledger report: bad\ufffd.jsonl</title>" in page
    assert "\ufffd owner" in page and 'class="banner valid"' in page
    assert "wrote " in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file


def test_a_failure_while_rendering_is_a_typed_error_and_writes_nothing(scripted, tmp_path,
                                                                      monkeypatch, capsys):
    import dp.report

    def broken(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr(dp.report, "_table", broken)
    with pytest.raises(ReportError, match="cannot render the report of .*RuntimeError: boom"):
        audit(scripted)
    out = tmp_path / "r.html"
    assert main(["budget", "report", str(scripted), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "secagg budget report: error: cannot render the report" in err
    assert "Traceback" not in err and "not written" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_the_old_report_and_no_partial_file(scripted, tmp_path,
                                                                          monkeypatch, capsys):
    out = tmp_path / "r.html"
    out.write_text("the previous report", encoding="utf-8")

    def full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["budget", "report", str(scripted), "-o", str(out)]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "the previous report"
    assert list(tmp_path.iterdir()) == [out]  # the temporary file is removed
    monkeypatch.undo()
    assert main(["budget", "report", str(scripted), "-o", str(out)]) == 0
    assert 'class="banner valid"' in out.read_text(encoding="utf-8")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # the mode a plain open() gives


def test_columns_say_what_is_verified_and_what_is_only_recorded(scripted, tmp_path):
    # survivors, n_min, clip norm and the mechanism are bound to nothing verify recomputes:
    # an unsigned ledger rewritten with other values (and re-chained) still verifies
    path = copy(scripted, tmp_path)

    def claim_more(entries):
        for e in entries[1:]:
            e.update(survivors=10_000, n_min=9_000, clip_norm=0.001)
            e["mechanism"]["name"] = "none at all"

    rechain(path, claim_more)
    verify(path)
    page = render_report(path)
    assert 'class="banner valid"' in page and "none at all" in page
    tag = '<span class="tag">{}</span>'
    for column in ("round", "time (UTC)", "session", "cohort", "survivors", "n_min",
                   "mechanism", "mechanism parameters", "clip norm"):
        assert f"<th>{column}{tag.format('as recorded')}</th>" in page, column
    assert f"<th>cumulative &epsilon; (recorded){tag.format('verified')}</th>" in page
    assert f"<th>cumulative &delta; (recorded){tag.format('verified')}</th>" in page
    assert f"<th>cumulative &epsilon; (recomputed){tag.format('recomputed')}</th>" in page
    assert f"<th>&epsilon; of the round alone{tag.format('recomputed')}</th>" in page
    assert f"<th>accounted event{tag.format('accounted')}</th>" in page
    legend = page[page.index('id="columns"'):]
    assert ("does not check round, time, session, cohort, survivors, n_min, the mechanism, "
            "its parameters or the clip norm against the event") in legend


def test_a_hostile_field_cannot_blow_up_the_page(tmp_path):
    big = 300_000
    path = make_ledger(tmp_path / "wide.jsonl", rounds=2, session="s" * big,
                       mechanism={**MECHANISM, "name": '"' * big})
    path = rechain(path, lambda e: e[0].update({f"extra{i}": "x" for i in range(500)}))
    verify(path)
    ledger_size = path.stat().st_size
    page = render_report(path)
    assert 'class="banner valid"' in page
    assert f"\u2026 ({big - 300} more characters)" in page  # each displayed field cut, marked
    assert page.count("more characters)") >= 2 * 3  # session, mechanism and each whole entry
    assert "460 more fields, not shown" in page  # the open entry's extra fields capped
    assert len(page) < 200_000 < ledger_size  # bounded per row, not by the field's size
