"""One registry of studies: the command line, its help, the study modules and the claims they test read it."""

from __future__ import annotations

import inspect

import pytest

from gdsoftmax.analysis.paper_claims import claim_by_id
from gdsoftmax.cli import build_parser
from gdsoftmax.studies.registry import STUDIES, build
from gdsoftmax.studies.untested_claims import ANALYSES
from gdsoftmax.studies.untested_report import STUDY_CLAIMS, TITLES

ROOT = inspect.getfile(build).rsplit("/src/", 1)[0]


def test_the_command_line_offers_every_registered_study_and_no_other():
    study = next(a for a in build_parser()._subparsers._group_actions[0].choices["study"]._actions
                 if a.dest == "kind")
    assert tuple(study.choices) == tuple(STUDIES)


def test_every_analysis_of_the_factorial_studies_is_registered_with_its_claim():
    assert set(ANALYSES) <= set(STUDIES)
    assert {kind: STUDIES[kind].claims[0] for kind in ANALYSES} == STUDY_CLAIMS
    assert {kind: STUDIES[kind].title for kind in ANALYSES} == TITLES


@pytest.mark.parametrize("kind", list(STUDIES))
def test_each_study_names_a_builder_claims_and_a_config_that_exist(kind):
    from pathlib import Path

    study = STUDIES[kind]
    module, _, name = study.builder.partition(":")
    function = getattr(__import__(module, fromlist=[name]), name)
    parameters = inspect.signature(function).parameters
    assert {"sweep_dir", "out_dir", "command"} <= set(parameters)
    assert ("kind" in parameters) == study.takes_kind
    assert ("reference_report" in parameters) == study.reference
    for claim in study.claims:
        claim_by_id(claim)
    assert (Path(ROOT) / study.config).is_file()


def test_an_unknown_study_is_refused_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="the studies are: regime, replication"):
        build("nope", tmp_path, tmp_path)
