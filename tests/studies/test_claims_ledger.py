"""The claims registry, the theory checks, the ledger's status rule, and the committed ledger and
reports against each other."""

from __future__ import annotations

import math
import re
from dataclasses import astuple
from pathlib import Path

import pytest
import torch

from gdsoftmax.analysis import theory_checks
from gdsoftmax.analysis.paper_claims import UNTESTED_REASONS, paper_claims
from gdsoftmax.analysis.run_metrics import RunMetrics
from gdsoftmax.cli import main
from gdsoftmax.studies.claims import verdicts_from_runs_csv
from gdsoftmax.studies.ledger import build_ledger, ledger_entries
from gdsoftmax.studies.registry import STUDIES
from gdsoftmax.studies.run_table import METRIC_COLUMNS, RunRow, write_runs_csv
from gdsoftmax.studies.verdicts import Verdict, read_verdicts, write_verdicts
from recompute import paired_p_values, paired_verdicts

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results"
PAPER = ROOT.parent / "shared" / "paper"
# claims that a study of their own decides (their verdicts are in that study's claims.csv)
STUDIED = {v.claim for path in RESULTS.glob("*/claims.csv") for v in read_verdicts(path)}
COPIES = {"arXiv v1": "001_510ea2ab00f2ef21.txt", "ICLR 2024 submission": "003_922b42d6292c2224.txt"}


def test_every_claim_names_its_source_and_how_it_is_decided():
    claims = paper_claims()
    assert len(claims) >= 30
    for claim in claims:
        assert claim.sources, claim.id
        assert all(s.version in COPIES for s in claim.sources), claim.id
        if claim.kind == "theory":
            assert claim.check in theory_checks.CHECKS
            assert theory_checks.CHECKS[claim.check][0] == claim.id
        elif claim.test is None:  # decided by a study of its own, or untested with a reason
            assert claim.untested or claim.id in STUDIED, f"{claim.id}: neither tested nor said why not"
        else:
            assert claim.test.metric in METRIC_COLUMNS
            assert claim.test.baseline_metric in METRIC_COLUMNS
        for untested in claim.untested:
            assert untested.reason in UNTESTED_REASONS
            assert untested.reason != "needs a GPU" or (ROOT / untested.config).is_file()
            assert untested.reason != "not yet run" or untested.command


@pytest.mark.skipif(not PAPER.is_dir(), reason="the paper's text is not beside this checkout")
def test_cited_lines_exist_in_the_seed_texts():
    lengths = {v: len((PAPER / f).read_text(encoding="utf-8").splitlines()) for v, f in COPIES.items()}
    for claim in paper_claims():
        for source in claim.sources:
            numbers = [int(n) for n in re.findall(r"\d+", source.lines)]
            assert numbers, (claim.id, source)
            assert max(numbers) <= lengths[source.version], (claim.id, source)


@pytest.mark.skipif(not PAPER.is_dir(), reason="the paper's text is not beside this checkout")
def test_paraphrases_do_not_copy_the_papers_sentences():
    """No run of eight words of a claim's paraphrase appears in either version's text."""
    texts = " ".join(" ".join((PAPER / f).read_text(encoding="utf-8").lower().split()) for f in COPIES.values())
    for claim in paper_claims():
        words = claim.says.lower().split()
        for i in range(len(words) - 7):
            assert " ".join(words[i:i + 8]) not in texts, claim.id


@pytest.mark.parametrize("name", sorted(theory_checks.CHECKS))
def test_the_papers_theory_holds_for_our_loss(name):
    assert theory_checks.run_check(name).holds


def test_a_theory_check_fails_for_a_loss_that_ignores_beta(monkeypatch):
    def plain_cross_entropy(input, target, *, beta, reduction):
        return torch.nn.functional.cross_entropy(input, target, reduction=reduction)

    monkeypatch.setattr(theory_checks, "gradient_decay_loss", plain_cross_entropy)
    assert not theory_checks.run_check("gradient_form").holds
    assert not theory_checks.run_check("magnitude_order").holds
    assert not theory_checks.run_check("inflection_point").holds


def _verdict(claim: str, dataset: str, verdict: str) -> Verdict:
    return Verdict(claim, "claims", dataset, "fcnn", 10, "β = 0.1", 3, 1.0, 0.5, 0.5, 0.1, 0.9, 2.0, 0.01, 0.02,
                   "test accuracy vs β = 1", 4, verdict)


def _report_folder(root, name: str, dataset: str, verdicts: list[str], val_overconfidence: float = 0.1,
                   first_seed_ece: float = 0.1) -> None:
    """A report folder with β = 1 and β = 0.1 runs (its β = 1 values make its unit of evidence) and verdicts."""
    (root / name).mkdir()
    rows = [RunRow(f"beta={b}_seed={s}", f"beta={b}", f"β = {b:g}", b, False, s,
                   RunMetrics.of({"test ece": first_seed_ece + s, "val overconfidence": val_overconfidence}),
                   dataset, "fcnn", 10)
            for b in (1.0, 0.1) for s in range(3)]
    write_runs_csv(root / name / "runs.csv", rows)
    write_verdicts(root / name / "claims.csv", [_verdict("small-beta-accuracy", dataset, v) for v in verdicts])


@pytest.mark.parametrize(("verdicts", "status"), [
    (["confirmed", "inconclusive"], "supported once"),
    (["refuted", "inconclusive"], "refuted once"),
    (["confirmed", "refuted"], "mixed"),
    (["inconclusive", "undecided: fewer than 3 seeds"], "inconclusive"),
])
def test_status_rule_counts_in_scope_tests_only(tmp_path, verdicts, status):
    # small-beta-accuracy is made on mnist, cifar10, svhn; the fashion_mnist report points the other way
    _report_folder(tmp_path, "in_scope", "mnist", verdicts)
    _report_folder(tmp_path, "elsewhere", "fashion_mnist", ["refuted" if "confirmed" in verdicts else "confirmed"],
                   first_seed_ece=0.5)
    entry = next(e for e in ledger_entries(tmp_path) if e.claim.id == "small-beta-accuracy")
    assert entry.status == status
    assert [entry.counted(t) for t in entry.tests if t.report == "elsewhere"] == ["no: other data set"]


def test_a_claim_tested_only_elsewhere_is_untested_with_its_reason(tmp_path):
    _report_folder(tmp_path, "elsewhere", "fashion_mnist", ["refuted"])
    entry = next(e for e in ledger_entries(tmp_path) if e.claim.id == "small-beta-accuracy")
    assert entry.status == "untested"
    assert entry.why == "; ".join(sorted({u.reason for u in entry.claim.untested}))  # the registry's reasons


def test_ledger_refuses_verdicts_of_unregistered_claims(tmp_path):
    (tmp_path / "some_report").mkdir()
    write_verdicts(tmp_path / "some_report" / "claims.csv", [_verdict("beta-cures-everything", "mnist", "confirmed")])
    with pytest.raises(ValueError, match="not registered: beta-cures-everything"):
        build_ledger(tmp_path)
    assert main(["claims", "--results", str(tmp_path)]) == 2
    assert not (tmp_path / "CLAIMS.md").exists()


def test_claims_command_writes_and_checks(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    verdict = _verdict("small-beta-accuracy", "mnist", "confirmed")
    write_verdicts(tmp_path / "r" / "claims.csv", [verdict])
    (tmp_path / "r" / "report.md").write_text("# r\n\n## Claims\n\n| " + " | ".join(verdict.cells()) + " |\n")
    assert main(["claims", "--results", str(tmp_path), "--check"]) == 1
    assert main(["claims", "--results", str(tmp_path)]) == 0
    assert main(["claims", "--results", str(tmp_path), "--check"]) == 0
    text = (tmp_path / "CLAIMS.md").read_text()
    assert "[r](r/report.md#claims)" in text
    assert "## small-beta-accuracy" in text
    assert main(["claims", "--results", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["claims", "--results", str(tmp_path), "--out", str(tmp_path / "missing" / "C.md")]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


# ---- the committed ledger and reports --------------------------------------------------------------


def test_committed_ledger_is_what_the_reports_give():
    """A report's verdict and the ledger cannot disagree: the ledger is regenerated from the reports'
    claims.csv here and must equal the committed file; every registered claim has its section."""
    committed = (RESULTS / "CLAIMS.md").read_text(encoding="utf-8")
    assert committed == build_ledger(RESULTS), "docs/results/CLAIMS.md is stale: run gdsoftmax claims"
    for claim in paper_claims():
        assert f"\n## {claim.id}\n" in committed
        assert f"[`{claim.id}`](#{claim.id})" in committed


def test_the_ledger_names_the_study_that_decides_a_claim_from_the_study_registry():
    committed = (RESULTS / "CLAIMS.md").read_text(encoding="utf-8")
    dedicated = [(study, claim) for study in STUDIES.values() for claim in study.claims]
    assert len(dedicated) >= 5
    for study, claim in dedicated:
        section = committed.split(f"\n## {claim}\n")[1].split("\n## ")[0]
        assert f"Decided by: `gdsoftmax study {study.kind}` on a sweep of `{study.config}`." in section
    sweep_readers = ", ".join(f"`{s.kind}`" for s in STUDIES.values() if not s.claims)
    section = committed.split("\n## large-beta-ece\n")[1].split("\n## ")[0]
    assert f"the studies built on it: {sweep_readers})." in section


# Reports of the previous release whose runs were lost before runs.csv existed; each leaves this list when
# its sweep is rerun and its report regenerated (the commands are in docs/results/README.md).
NOT_YET_REGENERATED: set[str] = set()


def test_every_report_folder_keeps_its_runs_and_verdicts():
    reports = [p.parent for p in RESULTS.glob("*/report.md") if not p.parent.name.startswith("lab_")]
    assert reports
    for folder in reports:
        if folder.name in NOT_YET_REGENERATED:
            assert not (folder / "claims.csv").exists(), f"{folder.name} was regenerated: take it off the list"
            continue
        assert (folder / "runs.csv").is_file(), folder.name
        assert (folder / "claims.csv").is_file(), folder.name


def _plain(verdict) -> tuple:
    return tuple(None if isinstance(x, float) and math.isnan(x) else x for x in astuple(verdict))


@pytest.mark.parametrize("report", ["mnist_fcnn", "fashion_mnist_calibration", "cifar10_cpu", "cifar10_overconfident",
                                    "shakespeare_char", "shakespeare_bpe", "digits_timm_confirm",
                                    "replication_mnist_fcnn", "replication_fashion_mnist_fcnn",
                                    "replication_cifar10_fcnn", "replication_cifar10_mlp_adamw"])
def test_a_committed_reports_verdicts_recompute_from_its_runs_csv(report):
    folder = RESULTS / report
    committed = read_verdicts(folder / "claims.csv")
    assert [_plain(v) for v in verdicts_from_runs_csv(folder / "runs.csv")] == [_plain(v) for v in committed]
    text = (folder / "report.md").read_text(encoding="utf-8")
    for v in committed:
        assert "| " + " | ".join(v.cells()) + " |" in text
    pairs = paired_verdicts(committed)  # recomputed by code that did not write them
    recomputed = paired_p_values(folder / "runs.csv", {v.claim for v in pairs})
    for v in pairs:
        p, holm_p = recomputed[(v.claim, v.setting)]
        assert v.p == pytest.approx(p, rel=1e-9, nan_ok=True), (v.claim, v.setting)
        assert v.holm_p == pytest.approx(holm_p, rel=1e-9, nan_ok=True), (v.claim, v.setting)


def test_a_changed_run_changes_the_recomputed_verdicts(tmp_path):
    """The recompute test can fail: one seed's accuracy moved, and a verdict row no longer matches."""
    source = (RESULTS / "mnist_fcnn" / "runs.csv").read_text(encoding="utf-8").splitlines()
    header = source[0].split(",")
    column = header.index("test accuracy")
    cells = source[1].split(",")
    cells[column] = repr(float(cells[column]) + 0.05)
    (tmp_path / "runs.csv").write_text("\n".join([source[0], ",".join(cells), *source[2:]]) + "\n")
    committed = read_verdicts(RESULTS / "mnist_fcnn" / "claims.csv")
    assert [_plain(v) for v in verdicts_from_runs_csv(tmp_path / "runs.csv")] != [_plain(v) for v in committed]


def test_no_claim_calls_a_study_not_yet_run_once_a_committed_report_tests_it():
    """An untested entry "not yet run" (a claim on a data set) goes once a committed report tests that claim on
    that data set; the check runs over every such entry (there are some), against every committed claims.csv."""
    tested = {(v.claim, v.dataset) for folder in sorted(RESULTS.iterdir()) if (folder / "claims.csv").is_file()
              for v in read_verdicts(folder / "claims.csv")}
    assert ("small-beta-overconfidence", "cifar10") in tested  # the check sees what the reports test
    checked = 0
    for claim in paper_claims():
        for entry in claim.untested:
            if entry.reason != "not yet run":
                continue
            for dataset in (part.strip() for part in entry.scope.split(",")):
                checked += 1
                assert (claim.id, dataset) not in tested, (
                    f"{claim.id}: '{entry.scope}' says not yet run, but a committed report tests it on {dataset}")
    assert checked >= 1


def test_every_ledger_link_lands_on_a_heading_of_its_report():
    from gdsoftmax.studies.ledger import heading_anchor

    text = (RESULTS / "CLAIMS.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\((\w+)/report\.md#([\w-]+)\)", text))
    assert links
    for folder, anchor in links:
        headings = [line[3:] for line in (RESULTS / folder / "report.md").read_text(encoding="utf-8").splitlines()
                    if line.startswith("## ")]
        assert anchor in {heading_anchor(h) for h in headings}, (folder, anchor)
