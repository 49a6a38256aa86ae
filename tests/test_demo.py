"""The demo regenerates its own synthetic dataset but never overwrites someone's real one."""
from __future__ import annotations

import json

from click.testing import CliRunner

from rbmnet.cli.demo import main as demo


def test_demo_refuses_to_overwrite_a_real_teeth_dataset(roots):
    folder = roots["raw"] / "Teeth"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"source": "our clinic"}))
    result = CliRunner().invoke(demo, ["--stop-after", "convert"])
    assert result.exit_code == 2
    assert "not the synthetic demo" in result.output
    assert json.loads((folder / "dataset.json").read_text())["source"] == "our clinic"


def test_demo_regenerates_its_own_synthetic_dataset(roots):
    runner = CliRunner()
    for _ in range(2):  # the second run meets the first run's dataset and replaces it
        result = runner.invoke(demo, ["--stop-after", "convert"])
        assert result.exit_code == 0, result.output
    assert len(list((roots["raw"] / "Teeth" / "imagesTr").glob("*.png"))) == 40
