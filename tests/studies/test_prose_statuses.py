"""Prose tied to the ledger (issue 40): every link to a claim's ledger row says that claim's status, and no
sentence reads a result that was merely not significant as a match."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gdsoftmax.studies.evidence import STATUSES
from gdsoftmax.studies.ledger import ledger_entries

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
PROSE = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[([^\]]+)\]\((?:[./\w-]*/)?CLAIMS\.md#([\w-]+)\)")
# words that claim two results are the same: only an equivalence test may say so (issue 40)
SAMENESS = re.compile(r"\b(as well as|did as well|as good as|changes nothing|no difference (?:between|from|in)|"
                      r"is level|are level|level for every|did not change|does not change|made no difference)\b",
                      re.I)
# a line may use those words where it states what the paper claims, or says the difference was not significant
HONEST = re.compile(r"significant|survives|equivalen|the paper (?:claims|says|states)|\bclaim\b \(|n\.s\.", re.I)


def _prose_files() -> list[Path]:
    # generated reports print their own verdicts from their runs; the ledger is generated too
    return [p for p in PROSE if p.name not in ("CLAIMS.md", "report.md")]


def test_every_status_link_says_the_ledgers_status():
    statuses = {e.claim.id: e.status for e in ledger_entries(RESULTS)}
    checked = 0
    for path in _prose_files():
        for text, claim in LINK.findall(path.read_text(encoding="utf-8")):
            if claim not in statuses:
                pytest.fail(f"{path.relative_to(ROOT)} links CLAIMS.md#{claim}, which is no claim")
            words = [s for s in STATUSES if re.search(rf"\b{re.escape(s)}\b", text)]
            if words:  # a link whose text names a status must name the ledger's
                checked += 1
                assert statuses[claim] in words, (
                    f"{path.relative_to(ROOT)}: [{text}](CLAIMS.md#{claim}) but the ledger says {statuses[claim]}")
    assert checked >= 10


def test_the_check_can_fail():
    text = "[confirmed](docs/results/CLAIMS.md#small-beta-accuracy)"
    (_words, claim), = LINK.findall(text)
    statuses = {e.claim.id: e.status for e in ledger_entries(RESULTS)}
    assert statuses[claim] != "confirmed"  # the README would be caught saying this


def _sentences(text: str) -> list[str]:
    """Paragraphs joined across their line breaks, then cut at sentence ends (code blocks left out)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [s for p in paragraphs for s in re.split(r"(?<=[.;])\s+", p)]


def test_no_sentence_calls_not_significant_the_same():
    found = []
    for path in _prose_files():
        for sentence in _sentences(path.read_text(encoding="utf-8")):
            if SAMENESS.search(sentence) and not HONEST.search(sentence):
                found.append(f"{path.relative_to(ROOT)}: ...{sentence[:160]}...")
    assert not found, "say 'not significant at n = k', or link an equivalence test:\n" + "\n".join(found)


def test_the_sentence_check_can_fail():
    text = "Temperature scaling did as well as β = 20. The warm-up is not significantly different at n = 3."
    assert [s for s in _sentences(text) if SAMENESS.search(s) and not HONEST.search(s)] == [
        "Temperature scaling did as well as β = 20."]


def test_the_theory_commands_closing_lines_quote_the_ledger():
    from gdsoftmax.labs.theory_table import LEDGER

    statuses = {e.claim.id: e.status for e in ledger_entries(RESULTS)}
    assert {claim: statuses[claim] for claim in LEDGER} == LEDGER
