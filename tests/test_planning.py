"""Fingerprint, planner rules, plan re-use and overrides, five-fold splits."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from raw_factory import TOOTH_VALUES, make_raw_dataset, tooth_label
from rbmnet.cli.plan_and_preprocess import main as plan_main
from rbmnet.cli.plan_and_preprocess import plan_and_preprocess
from rbmnet.data.checks import inventory_dataset
from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json, write_json
from rbmnet.paths import preprocessed_root
from rbmnet.planning.fingerprint import compute_fingerprint, load_or_compute_fingerprint
from rbmnet.planning.plan import REMOVED_KEYS, NetworkConfig, Plan, apply_overrides, load_plan
from rbmnet.planning.planner import (GIB, MAX_BATCH, MIN_BATCH, OUTPUT_VALUES_PER_CHANNEL_PIXEL, MemoryBudget, batch_size_for, check_input_size,
                                     generate_plan, memory_budget, model_state_bytes, per_sample_bytes,
                                     plan_input_size)
from rbmnet.planning.splits import load_or_create_splits, make_splits


def _fingerprint(median_shape=(1024, 2041), labeled=100, unlabeled=400, test=0) -> dict:
    return {"num_labeled": labeled, "num_unlabeled": unlabeled, "num_test": test,
            "aggregate": {"median_shape": list(median_shape)}}


def _budget(gib: float) -> MemoryBudget:
    return MemoryBudget("test", int(gib * GIB), int(gib * GIB), "test")


# --- fingerprint -------------------------------------------------------------------------------

def test_fingerprint_facts(roots):
    make_raw_dataset(roots["raw"], n_labeled=6, n_unlabeled=2, n_test=1, shape=(32, 64), bits=16)
    fingerprint = compute_fingerprint(inventory_dataset("Tiny"), num_processes=1, verbose=False)
    assert (fingerprint["num_labeled"], fingerprint["num_unlabeled"], fingerprint["num_test"]) == (6, 2, 1)
    cases = {c["case"]: c for c in fingerprint["cases"]}
    assert len(cases) == 9 and cases["tst000"]["role"] == "test"
    lab = cases["lab001"]
    assert lab["shape"] == [32, 64] and lab["dtype"] == "uint16" and lab["bit_depth"] == 16 and lab["channels"] == 1
    expected_fraction = float((tooth_label((32, 64), 1) > 0).mean())
    assert lab["foreground_fraction"] == pytest.approx(expected_fraction)
    assert lab["labels_present"] == [0, *TOOTH_VALUES]
    # teeth are drawn ~120 grey levels brighter (x257 for 16 bit) than the background
    assert lab["foreground_intensity"]["mean"] > lab["intensity"]["mean"] + 50 * 257
    assert lab["intensity"]["percentile_00_5"] < lab["intensity"]["percentile_99_5"]
    assert cases["unl000"]["foreground_fraction"] is None and cases["unl000"]["labels_present"] is None

    aggregate = fingerprint["aggregate"]
    assert aggregate["num_cases"] == 8  # labeled + unlabeled; test images stay out of the aggregate
    assert aggregate["median_shape"] == [32, 64] and aggregate["median_aspect_ratio"] == 2.0
    assert aggregate["labels_present"] == [0, *TOOTH_VALUES]
    assert aggregate["label_case_counts"]["11"] == 6
    assert aggregate["bit_depths"] == {"16": 8}
    pooled = aggregate["intensity"]
    assert pooled["num_pixels"] == 8 * 32 * 64
    means = [cases[c]["intensity"]["mean"] for c in cases if cases[c]["role"] != "test"]
    assert pooled["mean"] == pytest.approx(np.mean(means))  # equal-size images: mean of means
    assert aggregate["foreground_intensity"]["mean"] > pooled["mean"]


def test_fingerprint_reused_until_raw_data_change(roots):
    folder = make_raw_dataset(roots["raw"])
    path = roots["preprocessed"] / "Tiny" / "dataset_fingerprint.json"
    _, computed = load_or_compute_fingerprint(inventory_dataset("Tiny"), path, 1, False)
    assert computed
    _, computed = load_or_compute_fingerprint(inventory_dataset("Tiny"), path, 1, False)
    assert not computed
    (folder / "imagesUnlabeled" / "unl000.png").unlink()
    fingerprint, computed = load_or_compute_fingerprint(inventory_dataset("Tiny"), path, 1, False)
    assert computed and fingerprint["num_unlabeled"] == 1


# --- planner rules -----------------------------------------------------------------------------

@pytest.mark.parametrize("median, max_side, expected", [
    ((1024, 2041), 512, [256, 512]),
    ((512, 512), 512, [512, 512]),
    ((300, 400), 512, [304, 400]),  # never enlarged, only rounded
    ((1024, 2041), 256, [128, 256]),
    ((2000, 900), 512, [512, 224]),  # portrait
])
def test_input_size_keeps_aspect_and_divisibility(median, max_side, expected):
    assert plan_input_size(median, 16, max_side) == expected


@pytest.mark.parametrize("median", [(1024, 2041), (977, 1873), (512, 512), (1500, 3100), (333, 1000), (64, 70)])
def test_input_size_rule_holds_for_any_shape(median):
    height, width = plan_input_size(median, 16, 512)
    assert height % 16 == 0 and width % 16 == 0
    assert max(height, width) <= 512
    # aspect kept up to the rounding of each side to 16 px
    tolerance = 8 / min(height, width) + 8 / max(height, width) + 1e-9
    assert abs(math.log((width / height) / (median[1] / median[0]))) <= tolerance


def test_input_size_must_be_divisible():
    assert check_input_size([256, 512], 16) == [256, 512]
    with pytest.raises(RbmnetError, match=r"500x512 is not divisible by 16 .* use e.g. 496x512"):
        check_input_size([500, 512], 16)
    with pytest.raises(RbmnetError, match="not divisible"):
        generate_plan(_fingerprint(), "T", input_size=[250, 512], budget=_budget(4))


def test_batch_size_respects_budget_and_grows_with_it():
    network = NetworkConfig()
    sample, state = per_sample_bytes([256, 512], network), model_state_bytes(network)
    batches = []
    for gib in [0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 40, 80, 140]:
        batch = batch_size_for(int(gib * GIB), sample, state, training_cases=1000)
        assert MIN_BATCH <= batch <= MAX_BATCH
        if MIN_BATCH < batch < MAX_BATCH:
            assert batch * sample + state <= gib * GIB < (batch + 1) * sample + state
        batches.append(batch)
    assert batches == sorted(batches) and batches[0] == MIN_BATCH and batches[-1] == MAX_BATCH
    assert batch_size_for(80 * GIB, sample, state, training_cases=5) == 5
    assert batch_size_for(80 * GIB, sample, state, training_cases=1) == MIN_BATCH


def test_memory_model_scales_with_size_and_width():
    small = NetworkConfig(features_per_stage=[16, 32, 64, 128, 256])
    assert per_sample_bytes([512, 512], NetworkConfig()) == 4 * per_sample_bytes([256, 256], NetworkConfig())
    assert per_sample_bytes([256, 256], small, 0) == per_sample_bytes([256, 256], NetworkConfig(), 0) // 2
    # the task's output channels add to it: 33 softmax channels (FDI teeth, classes head) cost more than 1
    extra = per_sample_bytes([256, 256], small, 33) - per_sample_bytes([256, 256], small, 1)
    assert extra == 32 * 256 * 256 * OUTPUT_VALUES_PER_CHANNEL_PIXEL * 4
    # the calibration: ~75 bytes per pixel x sum(features/4^s) = 62 for the default widths
    assert 70 < per_sample_bytes([100, 100], NetworkConfig()) / (100 * 100 * 62) < 90


def test_generated_plan_derivation_and_monotone_batches():
    small = generate_plan(_fingerprint(), "T", budget=_budget(2))
    large = generate_plan(_fingerprint(), "T", budget=_budget(64))
    assert small.input_size == [256, 512]
    assert small.pretext.batch_size < large.pretext.batch_size <= MAX_BATCH
    derivation = small.derivation
    used = small.pretext.batch_size * derivation["per_sample_bytes"] + derivation["model_state_bytes"]
    assert used <= derivation["budget_bytes"]
    for key in ("device", "memory_assumed_bytes", "budget_bytes", "memory_model", "per_sample_bytes",
                "input_size_rule", "batch_size_rule", "iterations_rule"):
        assert key in derivation
    # pretext: one pass over 90 % of the 500 images; segmentation: at least 25 steps
    assert small.pretext.iterations_per_epoch == math.ceil(450 / small.pretext.batch_size)
    assert small.segmentation.iterations_per_epoch == max(25, math.ceil(16 / small.segmentation.batch_size))
    assert small.pretext.epochs == 80  # the paper's, untouched by planning


def test_gpu_budget_and_cpu_budget():
    gpu = memory_budget(gpu_memory_gb=24)
    assert gpu.device == "cuda" and gpu.memory_bytes == 24 * GIB and gpu.budget_bytes < gpu.memory_bytes
    plan = generate_plan(_fingerprint(), "T", gpu_memory_gb=80)
    assert plan.pretext.batch_size == MAX_BATCH and plan.derivation["memory_assumed_gib"] == 80
    local = memory_budget()
    if local.device == "cpu":
        assert local.budget_bytes <= 4 * GIB and local.budget_bytes <= local.memory_bytes
    with pytest.raises(RbmnetError, match="positive"):
        memory_budget(gpu_memory_gb=0)


def test_overrides_win_and_shape_the_derivation():
    plan = generate_plan(_fingerprint(), "T", budget=_budget(8),
                         overrides={"pretext.batch_size": 5, "network.features_per_stage": [16, 32, 64, 128]})
    assert plan.pretext.batch_size == 5
    assert plan.network.total_downsampling == 8
    assert plan.input_size == [256, 512]  # multiples of 8 now; the same here
    assert plan.derivation["per_sample_bytes"] == per_sample_bytes([256, 512], plan.network,
                                                                   plan.derivation["output_channels"])
    with pytest.raises(RbmnetError, match="no such plan key"):
        generate_plan(_fingerprint(), "T", budget=_budget(8), overrides={"pretext.nope": 1})



def test_an_old_plan_with_removed_keys_loads_and_a_never_known_key_is_an_error(tmp_path):
    old = Plan(dataset_name="Old").to_dict()
    old["augmentation"]["num_workers"] = 4
    old["network"]["input_channels"] = 2
    write_json(tmp_path / "plans.json", old)
    with pytest.warns(UserWarning) as caught:
        plan = load_plan(tmp_path / "plans.json")
    notes = sorted(str(w.message) for w in caught)
    assert notes == [
        "note: plans.json key augmentation.num_workers is no longer used "
        "(the worker count is rbmnet_train -np); ignored",
        f"note: plans.json key network.input_channels is no longer used ({REMOVED_KEYS['network.input_channels']}); "
        "ignored"]
    current = Plan(dataset_name="Old").to_dict()
    assert plan.to_dict() == current
    with pytest.raises(RbmnetError, match=r"augmentation: unknown key\(s\) nope"):
        Plan.from_dict({**current, "augmentation": {**current["augmentation"], "nope": 1}})
    with pytest.raises(RbmnetError, match=r"unknown key\(s\) num_workers"):  # removed only where it lived
        Plan.from_dict({**current, "num_workers": 2})
    with pytest.raises(RbmnetError, match=r"no longer a plan key \(the worker count is rbmnet_train -np\)"):
        apply_overrides(plan, {"augmentation.num_workers": 2})


# --- plan_and_preprocess: plan files -----------------------------------------------------------

def test_user_edits_are_kept_and_overwrite_plans_replaces(roots):
    make_raw_dataset(roots["raw"])
    plan_and_preprocess("Tiny", num_processes=1, verbose=False)
    path = preprocessed_root() / "Tiny" / "plans.json"
    edited = read_json(path)
    edited["pretext"]["epochs"] = 3
    edited["masking"]["max_blocks"] = 4
    write_json(path, edited)

    # no time budget: a budgeted plan's epochs follow the measured speed, which varies with the load
    result = CliRunner().invoke(plan_main, ["-d", "Tiny", "-np", "1", "--time-budget", "off"])
    assert result.exit_code == 0, result.output
    assert "kept existing" in result.output
    assert "differs from a freshly generated plan in: masking.max_blocks, pretext.epochs" in result.output
    assert load_plan(path).pretext.epochs == 3

    result = CliRunner().invoke(plan_main, ["-d", "Tiny", "-np", "1", "--overwrite-plans", "--time-budget", "off"])
    assert result.exit_code == 0 and "(replaced)" in result.output
    assert load_plan(path).pretext.epochs == 80 and load_plan(path).masking.max_blocks == 5


def test_cli_set_input_size_and_plans_name(roots):
    make_raw_dataset(roots["raw"], shape=(48, 96))
    result = CliRunner().invoke(plan_main, ["-d", "Tiny", "-np", "1", "-p", "small", "--input-size", "32", "64",
                                            "--set", "segmentation.epochs=7", "--set", "seed=3"])
    assert result.exit_code == 0, result.output
    assert "input size 32x64" in result.output and "batch size: pretext" in result.output
    assert "epochs x iterations: pretext 80" in result.output and "done in" in result.output
    plan = load_plan(preprocessed_root() / "Tiny" / "small.json")
    assert plan.input_size == [32, 64] and plan.segmentation.epochs == 7 and plan.seed == 3
    assert plan.plans_name == "small"
    assert not (preprocessed_root() / "Tiny" / "plans.json").exists()
    assert (preprocessed_root() / "Tiny" / "2d_32x64" / "cases.json").is_file()

    bad = CliRunner().invoke(plan_main, ["-d", "Tiny", "-q", "--input-size", "30", "64", "--overwrite-plans"])
    assert bad.exit_code == 2 and "30x64 is not divisible by 16" in bad.output
    bad = CliRunner().invoke(plan_main, ["-d", "Tiny", "-q", "--set", "pretext.epochs=many"])
    assert bad.exit_code == 2 and "pretext.epochs" in bad.output


# --- splits ------------------------------------------------------------------------------------

CASES = [f"case{i:02d}" for i in range(23)]


def test_splits_seeded_and_complete():
    splits = make_splits(CASES, seed=1)
    assert splits == make_splits(list(reversed(CASES)), seed=1)  # input order does not matter
    assert splits != make_splits(CASES, seed=2)
    assert len(splits) == 5
    val_cases = [c for fold in splits for c in fold["val"]]
    assert sorted(val_cases) == CASES  # every case in exactly one validation fold
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == CASES
        assert len(fold["val"]) in (4, 5)


def test_splits_written_once_and_guarded(tmp_path):
    path = tmp_path / "splits_final.json"
    first, created = load_or_create_splits(path, CASES, seed=1)
    assert created and json.loads(path.read_text()) == first
    again, created = load_or_create_splits(path, CASES, seed=99)  # the seed no longer matters: reused
    assert not created and again == first
    with pytest.raises(RbmnetError, match=r"1 new, e.g. \['new'\].*--overwrite-splits"):
        load_or_create_splits(path, CASES + ["new"], seed=1)
    replaced, created = load_or_create_splits(path, CASES + ["new"], seed=1, overwrite=True)
    assert created and "new" in [c for f in replaced for c in f["val"]]
    with pytest.raises(RbmnetError, match="4 labeled case.*at least 5"):
        make_splits(CASES[:4], seed=1)


def test_too_few_labeled_cases_fail_before_writing_a_plan(roots):
    make_raw_dataset(roots["raw"], n_labeled=4)
    result = CliRunner().invoke(plan_main, ["-d", "Tiny", "-q"])
    assert result.exit_code == 2 and "4 labeled case(s)" in result.output
    assert not (preprocessed_root() / "Tiny" / "plans.json").exists()


def test_splits_use_plan_seed(roots):
    make_raw_dataset(roots["raw"], n_labeled=12)
    plan_and_preprocess("Tiny", num_processes=1, verbose=False, overrides={"seed": 7})
    splits = read_json(preprocessed_root() / "Tiny" / "splits_final.json")
    assert splits == make_splits([f"lab{i:03d}" for i in range(12)], seed=7)


def test_batch_size_override_rederives_iterations(roots):
    from rbmnet.planning.planner import generate_plan

    fingerprint = {"aggregate": {"median_shape": [256, 256]}, "num_labeled": 100, "num_unlabeled": 100,
                   "num_test": 0}
    plan = generate_plan(fingerprint, "X", overrides={"pretext.batch_size": 10}, gpu_memory_gb=80)
    assert plan.pretext.batch_size == 10
    assert plan.pretext.iterations_per_epoch == 18  # ceil(180 pretext images / 10): one pass per epoch
