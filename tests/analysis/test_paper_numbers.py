"""The paper's numbers as data: complete rows, the sums they must have, lookups by setting."""

from __future__ import annotations

from collections import defaultdict

from gdsoftmax.analysis.paper import lookup, paper_numbers, setting_key


def test_every_value_has_its_source():
    numbers = paper_numbers()
    assert len(numbers) > 300
    assert {n.version for n in numbers} == {"arXiv v1", "ICLR 2024 submission"}
    assert all(n.table.startswith("Table ") and n.dataset and n.model and n.metric for n in numbers)


def test_table_1_columns_count_the_whole_mnist_training_set():
    totals = defaultdict(int)
    for n in paper_numbers():
        if n.table == "Table 1":
            totals[(n.version, n.setting)] += n.value
    assert set(totals.values()) == {60_000}
    assert len(totals) == 10  # 5 beta values in each version


def test_lookups_by_setting():
    assert setting_key(5.0) == "5"
    assert setting_key(0.1) == "0.1"
    [ece] = lookup("cifar10", "resnet18", "ECE (10 bins)", "20")
    assert (ece.value, ece.citation) == (0.023, "ICLR 2024 submission, Table 3")
    accuracies = {n.version: n.value for n in lookup("cifar10", "resnet18", "top-1 accuracy %", "1")}
    assert accuracies == {"arXiv v1": 83.9, "ICLR 2024 submission": 94.3}  # the versions differ
    assert lookup("cifar10", "resnet18", "top-1 accuracy %", "7") == []


def test_tiny_imagenet_rows_agree_between_tables_3_and_5():
    """ICLR Table 5 (ResNet34 on Tiny-ImageNet) repeats Table 3's ECE and MCE at the betas both print."""
    for metric in ("ECE (10 bins)", "MCE (10 bins)"):
        for beta in ("20", "10", "1", "0.1"):
            values = {n.table: n.value for n in lookup("tiny_imagenet", "resnet34", metric, beta)}
            assert values["Table 3"] == values["Table 5"], (metric, beta)
    mce = {n.table: n.value for n in lookup("tiny_imagenet", "resnet50", "MCE (10 bins)", "10")}
    assert mce == {"Table 3": 0.044, "Table 6": 0.044}  # ICLR lines 722 and 918


def _version_gaps(dataset: str) -> list[float]:
    numbers = paper_numbers()
    v1 = {(n.model, n.setting): n.value for n in numbers
          if n.version == "arXiv v1" and n.dataset == dataset and n.metric == "top-1 accuracy %"}
    iclr = {(n.model, n.setting): n.value for n in numbers
            if n.version != "arXiv v1" and n.table == "Table 2" and n.dataset == dataset}
    return [iclr[key] - value for key, value in v1.items() if key in iclr]


def test_notes_state_the_gap_between_the_versions_as_the_numbers_give_it():
    for dataset, low, high in (("cifar10", "7.3", "14.6"), ("cifar100", "18.7", "29.8")):
        gaps = _version_gaps(dataset)
        assert len(gaps) == 24
        assert (f"{min(gaps):.1f}", f"{max(gaps):.1f}") == (low, high)
        notes = {n.note for n in paper_numbers() if n.version == "arXiv v1" and n.dataset == dataset}
        assert any(f"{low} to {high} points" in note for note in notes), dataset
