"""data.input_scaling (standardize, unit, raw), and run directories older than a new config key."""

import json

import pytest
import torch

from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.data.images import load_dataset, with_input_scaling
from gdsoftmax.engine.rundir.records import IDENTITY_FILE, RunMismatchError
from gdsoftmax.engine.rundir.writer import RunWriter


def test_the_three_scalings():
    data = load_dataset("digits", val_size=0)
    images = data.train.images[:50]
    torch.testing.assert_close(with_input_scaling(data, "unit").normalize(images), images.float() / 16)
    torch.testing.assert_close(with_input_scaling(data, "raw").normalize(images), images.float())
    standard = with_input_scaling(data, "standardize").normalize(data.train.images)
    assert abs(float(standard.mean())) < 0.05  # the default: per channel, the training statistics
    with pytest.raises(ValueError, match=r"data\.input_scaling must be one of"):
        parse_config({"data": {"input_scaling": "zscore"}})


def test_a_run_directory_from_before_a_key_existed_resumes_at_that_keys_default(tmp_path):
    run = RunWriter(tmp_path / "run")
    run.claim(parse_config({}))
    run.open(parse_config({}), 0)
    path = run.path / IDENTITY_FILE
    recorded = json.loads(path.read_text())
    del recorded["identity"]["data.input_scaling"]  # as an older version wrote it
    path.write_text(json.dumps(recorded))
    RunWriter(tmp_path / "run").claim(parse_config({}))  # the default: the same run
    with pytest.raises(RunMismatchError, match=r'data.input_scaling \("standardize" there, "raw" now\)'):
        RunWriter(tmp_path / "run").claim(parse_config({"data": {"input_scaling": "raw"}}))
