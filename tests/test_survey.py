"""The survey's comparison table (python -m autocomp.bench survey)."""

from __future__ import annotations

import csv
import json

import pytest

from autocomp.config import ConfigError, SurveyConfig
from autocomp.devices.tables import load_profile
from autocomp.survey.builtin import partial_path, run_survey, write_survey


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
    # A killed survey resumes: rows already made (with the same settings) are not made again.
    partial = partial_path(config)
    lines = [json.loads(line) for line in partial.read_text().splitlines()]
    assert [e["key"] for e in lines] == ["original|0", "filter|0.5", "gap|0", "dwsep|0.5"]
    lines[1]["row"]["test_accuracy"] = 0.123  # a marker: kept only if the row is reused
    partial.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"key": "torn')
    again = run_survey(config)
    assert again[1].test_accuracy == 0.123 and again[2:] == rows[2:]
    paths = write_survey(rows, config, "python -m autocomp.bench survey")
    assert not partial.exists()
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [row["technique"] for row in table] == ["original", "filter", "gap", "dwsep"]
    md = paths["md"].read_text()
    assert "| original |" in md and "python -m autocomp.bench survey" in md
    profile = load_profile(config.device.profile)
    assert f"{profile.name} ({profile.kind} table)" in md.splitlines()[0]  # the table it used
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_survey_ratio_must_be_a_bin(tiny_config, tmp_path):
    config = tiny_config(survey=SurveyConfig(ratios=[0.3], out_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="survey.ratios.*env.ratios"):
        run_survey(config)
