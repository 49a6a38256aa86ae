"""rbmnet_benchmark's few-label axes: arms (encoder-only transfer from the fine-grained pretext,
mean teacher) and seeds, each cell in its own model folder, and the paired difference to scratch with
its interval (benchmarking/paired.py)."""
from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from rbmnet.benchmarking.paired import paired_difference
from rbmnet.cli.benchmark import main as benchmark_cli
from rbmnet.io.atomic import read_json
from rbmnet.model.checkpoint import FINAL, read_checkpoint_plan
from training_factory import make_tiny_dataset, pointed_at

TINY = ["--epochs", "1", "--batch-size", "2", "-np", "0", "--set", "segmentation.iterations_per_epoch=2",
        "--set", "network.features_per_stage=[4,8,16,32,64]", "--set", "pretext.epochs=1",
        "--set", "pretext.iterations_per_epoch=2", "--set", "pretext.batch_size=2"]
ARMS_GRID = ["-d", "Arms", "--archs", "resunet", "--no-rbm", "--arms", "grid_encoder,mean_teacher",
             "--seeds", "0,1", "--fractions", "0.5", "--folds", "0", *TINY]


def summary(values: dict[str, float]) -> dict:
    return {"per_case": [{"case": case, "dice": value} for case, value in values.items()]}


def test_paired_difference_is_per_case_and_its_interval_widens_with_the_seeds():
    reference = summary({"a": 0.5, "b": 0.6, "c": 0.7})
    same = paired_difference([(reference, reference)], "dice")
    assert same == {"mean": 0.0, "ci95": [0.0, 0.0], "units": 1, "cases": 3}
    better = summary({"a": 0.6, "b": 0.7, "c": 0.8, "extra": 1.0})  # a case the reference lacks is not paired
    one = paired_difference([(better, reference)], "dice")
    assert one["mean"] == pytest.approx(0.1) and one["ci95"] == pytest.approx([0.1, 0.1]) and one["cases"] == 3
    # a second seed that disagrees: the mean is over units, the interval covers both
    worse = summary({"a": 0.4, "b": 0.5, "c": 0.6})
    two = paired_difference([(better, reference), (worse, reference)], "dice")
    assert two["mean"] == pytest.approx(0.0, abs=1e-12) and two["units"] == 2
    assert two["ci95"][0] == pytest.approx(-0.1) and two["ci95"][1] == pytest.approx(0.1)
    assert paired_difference([(summary({"x": 1.0}), reference)], "dice") is None


@pytest.fixture(scope="module")
def arms_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("arms")
    with pointed_at(make_tiny_dataset(root, "Arms", num_labeled=12, num_unlabeled=3)):
        first = CliRunner().invoke(benchmark_cli, ARMS_GRID, catch_exceptions=False)
        again = CliRunner().invoke(benchmark_cli, ARMS_GRID, catch_exceptions=False)
        yield root / "results" / "Arms", first, again


def test_every_arm_and_seed_trains_once_in_its_own_folder(arms_run):
    results, first, again = arms_run
    assert first.exit_code == 0, first.output
    assert "6 trained, 0 resumed, 0 skipped" in first.output
    assert "0 trained, 0 resumed, 6 skipped" in again.output  # the grid continues, it does not retrain
    for seed in (0, 1):
        for model_id in ("seg__resunet__scratch__frac0.5__plans", "seg__resunet__grid__frac0.5__plans__enc",
                         "seg__resunet__scratch__frac0.5__plans__mean-teacher"):
            folder = results / f"{model_id}__seed{seed}" / "fold_0"
            assert (folder / "validation" / "summary.json").is_file(), model_id
            assert read_checkpoint_plan(folder / FINAL)["seed"] == seed
    # the fine-grained arm started from the grid-masking pretext model, the only pretext trained
    assert [p.name for p in results.glob("pretext__*")] == ["pretext__resunet__plans__grid"]
    assert read_checkpoint_plan(results / "pretext__resunet__plans__grid" / FINAL)["masking"]["scheme"] == "grid"
    grid_plan = read_checkpoint_plan(results / "seg__resunet__grid__frac0.5__plans__enc__seed0" / "fold_0" / FINAL)
    assert grid_plan["segmentation"]["transfer"] == "encoder"
    teacher_cases = read_json(results / "seg__resunet__scratch__frac0.5__plans__mean-teacher__seed0" / "fold_0"
                              / "training_cases.json")
    scratch_cases = read_json(results / "seg__resunet__scratch__frac0.5__plans__seed0" / "fold_0"
                              / "training_cases.json")
    assert teacher_cases["cases"] == scratch_cases["cases"] and teacher_cases["unlabeled_cases"]  # same labels


def test_the_table_pairs_each_arm_with_scratch_over_the_seeds(arms_run):
    results, first, _ = arms_run
    table = pd.read_csv(results / "benchmark" / "benchmark.csv")
    assert list(table["num_folds"]) == [2, 2, 2]
    reference = table[table["model"] == "Modified ResUNet"].iloc[0]
    assert reference["vs_reference_units"] == 0 and pd.isna(reference["vs_reference_mean"])
    for name in ("fine-grained masking, encoder + warm-up", "mean teacher (scratch)"):
        row = table[table["model"] == name].iloc[0]
        assert row["vs_reference_units"] == 2
        assert row["vs_reference_ci_low"] <= row["vs_reference_mean"] <= row["vs_reference_ci_high"]
    markdown = (results / "benchmark" / "benchmark.md").read_text()
    assert "paired difference to Modified ResUNet from scratch" in markdown and "(u=2)" in markdown
    assert "folds 0 x seeds 0, 1" in markdown


def test_unknown_arm_and_bad_seeds_are_one_line_errors(arms_run):
    for args, expected in ((["--arms", "dino"], "unknown arm(s) dino"), (["--seeds", "0,x"], "--seeds expects")):
        result = CliRunner().invoke(benchmark_cli, ["-d", "Arms", "--archs", "resunet", "--folds", "0", *args, *TINY])
        assert result.exit_code == 2 and expected in result.output, result.output


def test_the_mean_teacher_from_the_fine_grained_pretext_names_all_it_combines():
    """Semi-supervision from the best initialisation measured so far: the grid pretext's encoder, warm-up,
    mean teacher; its model id says each, and it starts from the grid-masking pretext model."""
    from rbmnet.benchmarking.arms import FEW_LABEL_ARMS, resolve_arm
    from rbmnet.planning.plan import Plan, apply_overrides

    plan = apply_overrides(Plan(dataset_name="x"), {"segmentation.epochs": 10})
    arm = resolve_arm(FEW_LABEL_ARMS["mean_teacher_grid_encoder"], plan)
    assert (arm.init, arm.init_tag, arm.pretext_id_tag) == ("pretext", "grid", "__grid")
    assert arm.fine_tuning_tag == "__enc__warm2__mean-teacher"
    assert arm.override_dict == {"masking.scheme": "grid", "segmentation.transfer": "encoder",
                                 "segmentation.warmup_epochs": 2, "segmentation.semi_supervised": "mean_teacher"}


def test_the_warm_up_alone_has_an_arm_of_its_own_from_scratch():
    """The encoder arms change two things (pretext weights, warm-up): scratch + warm-up tells them apart."""
    from rbmnet.benchmarking.arms import FEW_LABEL_ARMS, MODEL_ORDER, REFERENCE_NAME, resolve_arm
    from rbmnet.planning.plan import Plan, apply_overrides

    plan = apply_overrides(Plan(dataset_name="x"), {"segmentation.epochs": 10})
    arm = resolve_arm(FEW_LABEL_ARMS["scratch_warmup"], plan)
    assert (arm.init, arm.init_tag, arm.fine_tuning_tag) == ("scratch", "scratch", "__warm2")
    assert arm.override_dict == {"segmentation.warmup_epochs": 2}
    assert arm.name != REFERENCE_NAME and arm.name in MODEL_ORDER  # its own row, paired with scratch
