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
