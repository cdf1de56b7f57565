"""The ledger counts independent settings, not tests (issue 40): units of evidence, the validation regime gate,
equivalence by two one-sided tests, and the statuses those give."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from gdsoftmax.analysis.paper_claims import claim_by_id
from gdsoftmax.analysis.run_metrics import RunMetrics
from gdsoftmax.studies.evidence import claim_status, equivalence_p, place_tests
from gdsoftmax.studies.ledger import build_ledger, ledger_entries
from gdsoftmax.studies.run_table import RunRow, write_runs_csv
from gdsoftmax.studies.verdicts import Verdict, write_verdicts


def _tost_by_hand(diffs: list[float], margin: float) -> float:
    """TOST from the raw paired differences with scipy's one-sample t-tests: no interval in between."""
    lower = stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(diffs, margin, alternative="less").pvalue
    return max(lower, upper)


@pytest.mark.parametrize("diffs", [[0.1, -0.2, 0.05, 0.0, 0.15], [0.9, 0.7, 1.2, 0.8, 1.1], [-0.3, 0.6, -0.9, 0.2]])
def test_equivalence_p_from_the_interval_is_tost_of_the_differences(diffs):
    n = len(diffs)
    mean, se = sum(diffs) / n, stats.sem(diffs)
    half = stats.t.ppf(0.975, n - 1) * se
    got = equivalence_p(mean, mean - half, mean + half, n, 1.0)
    assert got == pytest.approx(_tost_by_hand(diffs, 1.0), rel=1e-9)


def test_equivalence_needs_a_margin_and_an_interval():
    assert math.isnan(equivalence_p(0.0, -0.1, 0.1, 5, 0.0))
    assert math.isnan(equivalence_p(0.0, math.nan, math.nan, 5, 1.0))
    assert equivalence_p(0.3, -0.2, 0.8, 5, 1.0) < 0.05 < equivalence_p(0.3, -2.0, 2.6, 5, 1.0)


def _verdict(claim, setting, verdict, dataset="cifar10", delta=0.5, ci=(0.1, 0.9), n=5):
    return Verdict(claim, "claims", dataset, "cnn", 10, setting, n, 1.0, 0.5, delta, *ci, 2.0, 0.01, 0.02,
                   "test ece vs β = 1", 1, verdict)


def _report(root, name, verdicts, val_overconfidence, seed_values=(0.1, 0.2, 0.3), dataset="cifar10"):
    """A report folder: β = 1 and β = 5 runs (their β = 1 values decide which reports share runs)."""
    (root / name).mkdir()
    rows = [RunRow(f"beta={b}_seed={s}", f"beta={b:g}", f"β = {b:g}", b, False, s,
                   RunMetrics.of({"test ece": seed_values[s] if b == 1 else 0.05, "test accuracy": 0.7,
                                  "val overconfidence": val_overconfidence}), dataset, "cnn", 10)
            for b in (1.0, 5.0) for s in range(3)]
    write_runs_csv(root / name / "runs.csv", rows)
    write_verdicts(root / name / "claims.csv", verdicts)


def _entry(root, claim_id):
    return next(e for e in ledger_entries(root) if e.claim.id == claim_id)


def test_one_confirming_setting_is_supported_once_and_two_confirm(tmp_path):
    _report(tmp_path, "a", [_verdict("large-beta-ece", "β = 5", "confirmed")], 0.10)
    assert _entry(tmp_path, "large-beta-ece").status == "supported once"
    _report(tmp_path, "b", [_verdict("large-beta-ece", "β = 5", "confirmed")], 0.10, seed_values=(0.4, 0.5, 0.6))
    entry = _entry(tmp_path, "large-beta-ece")
    assert entry.status == "confirmed"
    assert entry.why.startswith("2 independent settings")


def test_reports_that_share_their_beta_1_runs_count_once(tmp_path):
    for name in ("a", "b", "c"):  # one comparison printed by three reports
        _report(tmp_path, name, [_verdict("large-beta-ece", "β = 5", "confirmed")], 0.10)
    entry = _entry(tmp_path, "large-beta-ece")
    assert entry.status == "supported once"
    assert {t.unit for t in entry.tests} == {"a + b + c"}


def test_the_regime_gate_reads_validation_and_is_nan_proof(tmp_path):
    _report(tmp_path, "calm", [_verdict("large-beta-ece", "β = 5", "refuted")], 0.01)
    _report(tmp_path, "blank", [_verdict("large-beta-ece", "β = 5", "refuted")], math.nan, seed_values=(0.7, 0.8, 0.9))
    entry = _entry(tmp_path, "large-beta-ece")
    assert entry.status == "untested"
    assert sorted(entry.counted(t) for t in entry.tests) == [
        "no: β = 1 not over-confident on validation (< 3 points)",
        "no: β = 1's validation over-confidence not recorded"]
    assert "2 refute (of 2 settings)" in build_ledger(tmp_path)  # shown as settings with their direction


def test_a_setting_with_one_refuting_test_is_not_confirmed_by_its_others(tmp_path):
    _report(tmp_path, "a", [_verdict("large-beta-ece", "β = 5", "confirmed"),
                            _verdict("large-beta-ece", "β = 50", "refuted", delta=-0.5)], 0.10)
    _report(tmp_path, "b", [_verdict("large-beta-ece", "β = 5", "confirmed")], 0.10, seed_values=(0.4, 0.5, 0.6))
    assert _entry(tmp_path, "large-beta-ece").status == "mixed"


def test_equivalent_only_from_equivalence_tests_and_inconclusive_says_the_seeds(tmp_path):
    tight = _verdict("large-beta-ece", "β = 5", "inconclusive", delta=0.1, ci=(-0.2, 0.4))
    wide = _verdict("large-beta-ece", "β = 5", "inconclusive", delta=0.1, ci=(-3.0, 3.2))
    _report(tmp_path, "a", [tight], 0.10)
    assert _entry(tmp_path, "large-beta-ece").status == "equivalent"
    _report(tmp_path, "b", [wide], 0.10, seed_values=(0.4, 0.5, 0.6))
    entry = _entry(tmp_path, "large-beta-ece")
    assert entry.status == "inconclusive"  # one setting could not tell: not "the same"
    assert "1 equivalent, 1 not significant at n = 5" in entry.why


def test_a_claim_without_a_margin_is_never_equivalent(tmp_path):
    claim = claim_by_id("large-beta-mce")
    assert claim.test.margin == 0
    _report(tmp_path, "a", [_verdict(claim.id, "β = 5", "inconclusive", delta=0.0, ci=(-0.01, 0.01))], 0.10)
    tests = place_tests(tmp_path, [("a", _verdict(claim.id, "β = 5", "inconclusive", delta=0.0, ci=(-0.01, 0.01)))],
                        {claim.id: 0.0})
    assert tests[0].equivalent is None
    assert claim_status(claim, tests)[0] == "inconclusive"
