"""The survey's comparison table (python -m autocomp.bench survey)."""

from __future__ import annotations

import csv

import pytest

from autocomp.config import ConfigError, SurveyConfig
from autocomp.survey import run_survey, write_survey


def test_survey_writes_table_csv_and_plot(tiny_config, tmp_path):
    survey = SurveyConfig(
        techniques=["filter", "gap", "dwsep"], ratios=[0.5], finetune_epochs=1,
        out_dir=str(tmp_path),
    )  # fmt: skip
    config = tiny_config(survey=survey)
    rows = run_survey(config)
    assert [r.technique for r in rows] == ["original", "filter", "gap", "dwsep"]
    original, filt, gap, dwsep = rows
    assert original.layers == "all" and original.ratio == 0.0
    assert filt.params < original.params and filt.macs < original.macs
    assert gap.layers == "fc1" and gap.ratio == 0.0 and gap.params < original.params
    assert dwsep.family == "C3" and dwsep.layers == "conv1,conv2"
    assert all(r.measured_ms is not None and r.measured_ms > 0 for r in rows)
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in rows)
    paths = write_survey(rows, config, "python -m autocomp.bench survey")
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [row["technique"] for row in table] == ["original", "filter", "gap", "dwsep"]
    md = paths["md"].read_text()
    assert "| original |" in md and "python -m autocomp.bench survey" in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_survey_ratio_must_be_a_bin(tiny_config, tmp_path):
    config = tiny_config(survey=SurveyConfig(ratios=[0.3], out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="survey.ratios.*env.ratios"):
        run_survey(config)
