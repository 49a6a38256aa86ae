"""Time budgets: durations, the chooser's rule, the speed cache, predictions in plans.json, the
predicted-vs-actual verdict of a training stage, and the demo planned by a budget."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rbmnet.errors import RbmnetError
from rbmnet.planning.durations import format_duration, parse_duration, predicted_vs_actual
from rbmnet.planning.speeds import Speed, SpeedCache, SpeedCase
from rbmnet.planning.time_budget import (MIN_SEGMENTATION_STEPS, STEP_TARGET, FixedValues, StagePrediction, Workload,
                                         choose_for_budget, minimum_budget)

# --- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
                                           ("1h30m", 5400), ("1.5h", 5400), (" 45M ", 2700)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "0", "0m", "-5m", "5", "", "m", "5x", "1h-5m"])
def test_bad_durations_are_one_line_errors_with_the_accepted_forms(text):
    with pytest.raises(RbmnetError) as error:
        parse_duration(text)
    message = str(error.value)
    assert "\n" not in message and "--time-budget" in message and "30m, 2h" in message


def test_durations_print_as_users_read_them():
    assert format_duration(42.4) == "42 s"
    assert format_duration(750) == "12 m 30 s"
    assert format_duration(5400) == "1 h 30 m"
    assert predicted_vs_actual(750, 785) == "predicted 12 m 30 s, took 13 m 05 s (+5 %)"
    assert predicted_vs_actual(100, 80).endswith("(-20 %)")


# --- the chooser ----------------------------------------------------------------------------------

HALF, FULL = (16, 32, 64, 128, 256), (32, 64, 128, 256, 512)
LADDER = [SpeedCase((256, 256), HALF, 4, 4, 33), SpeedCase((384, 384), HALF, 4, 4, 33),
          SpeedCase((512, 512), HALF, 4, 4, 33), SpeedCase((512, 512), FULL, 4, 4, 33)]
WORK = Workload(pretext_training_images=293, pretext_validation_images=32, seg_training_cases=52,
                seg_validation_cases=65, original_megapixels=0.26, folds=5)


def speed(step: float) -> Speed:
    return Speed(seg_step_seconds=step, pretext_step_seconds=step * 0.9, seg_batch_seconds=0.02,
                 pretext_batch_seconds=0.01, eval_seconds_per_image=step / 10, seg_report_seconds_per_megapixel=1.0,
                 pretext_report_seconds_per_image=0.3, source="measured on test")


SPEEDS = dict(zip(LADDER, (speed(0.4), speed(0.9), speed(1.6), speed(4.0))))


def choose(budget, fixed=None):
    return choose_for_budget(budget, LADDER, SPEEDS, WORK, fixed)


def test_the_chooser_asks_for_speeds_lazily_cheapest_first():
    assert choose_for_budget(600, LADDER, {}, WORK) == LADDER[0]
    # 10 minutes give the cheapest candidate fewer than STEP_TARGET steps: the next one is never measured
    only_first = {LADDER[0]: SPEEDS[LADDER[0]]}
    option = choose_for_budget(600, LADDER, only_first, WORK)
    assert option.case == LADDER[0] and option.segmentation.steps < STEP_TARGET
    # a day gives it more: then the second candidate's speed is needed
    assert choose_for_budget(86400, LADDER, only_first, WORK) == LADDER[1]


def test_the_chooser_is_monotone_and_never_exceeds_the_budget():
    budgets = [minimum_budget(LADDER[0], SPEEDS[LADDER[0]], WORK, FixedValues(), 25) * 1.01,
               600, 1200, 1800, 3600, 7200, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 10 * 86400]
    proxies, totals = [], []
    for budget in budgets:
        option = choose(budget)
        assert option.total_seconds <= budget
        assert option.segmentation.steps >= MIN_SEGMENTATION_STEPS
        if option.rank > 0:  # a more expensive candidate only when the fold keeps the target steps on it
            assert option.segmentation.steps >= STEP_TARGET
        proxies.append(option.quality_proxy)
        totals.append(option.total_seconds)
    assert proxies == sorted(proxies)
    assert choose(600).case == LADDER[0] and choose(10 * 86400).case == LADDER[3]
    # beyond the paper's protocol the rest of the budget stays unused
    assert choose(10 * 86400).segmentation.epochs == 100 and totals[-1] < 10 * 86400


def test_a_budget_below_the_smallest_configuration_names_the_minimum():
    minimum = minimum_budget(LADDER[0], SPEEDS[LADDER[0]], WORK, FixedValues(), 25)
    assert choose(minimum * 1.001).segmentation.steps >= MIN_SEGMENTATION_STEPS
    with pytest.raises(RbmnetError) as error:
        choose(minimum * 0.9)
    message = str(error.value)
    assert "too small" in message and format_duration(int(minimum) + 1) in message and "256x256" in message


def test_explicit_values_win_and_the_prediction_counts_them():
    option = choose(600, FixedValues(seg_epochs=3, pretext_epochs=2))
    assert option.segmentation.epochs == 3 and option.pretext.epochs == 2
    assert option.segmentation.steps == 3 * option.segmentation.iterations_per_epoch
    # explicit epochs may exceed the budget: the prediction says so instead of hiding it
    assert choose(600, FixedValues(seg_epochs=400)).total_seconds > 600


def test_from_scratch_the_fold_gets_the_whole_budget_and_the_pretext_keys_stay_sized():
    """Without pretraining the pretext stage is not part of the budget (the fold gets its share), yet its
    epochs are still sized to PRETEXT_SHARE, so that switching pretraining on needs no re-planning."""
    pretrained = choose(600, FixedValues())
    scratch = choose(600, FixedValues(pretrained=False))
    assert scratch.case == pretrained.case and scratch.pretext.epochs == pretrained.pretext.epochs >= 1
    assert scratch.segmentation.steps > pretrained.segmentation.steps
    assert scratch.total_seconds == pytest.approx(scratch.segmentation.total_seconds) and scratch.total_seconds <= 600
    assert pretrained.total_seconds == pytest.approx(pretrained.pretext.total_seconds
                                                     + pretrained.segmentation.total_seconds)
    assert pretrained.total_seconds <= 600
    # the fold alone takes what pretext + fold took: within one epoch of the budget in both
    assert 600 - scratch.total_seconds < scratch.segmentation.epoch_seconds


def test_a_stage_prediction_rescales_to_training_time_overrides():
    planned = StagePrediction(epochs=10, iterations_per_epoch=25, batch_size=4, iteration_seconds=0.4,
                              epoch_validation_seconds=2.0, startup_seconds=3.0, report_seconds=30.0)
    assert planned.total_seconds == pytest.approx(3 + 10 * (25 * 0.4 + 2) + 30)
    twice = planned.rescaled(epochs=20, iterations_per_epoch=25, batch_size=8)
    assert twice.total_seconds == pytest.approx(3 + 20 * (25 * 0.8 + 2) + 30)


def test_semi_supervised_steps_are_predicted_dearer_and_switch_at_training_time():
    """A mean-teacher step adds a second step's work and the teacher's forward passes; a plan made
    without semi-supervision but trained with it (--set at training time) is predicted with them."""
    plain = choose(1800, FixedValues())
    semi = choose(1800, FixedValues(semi_supervised=True))
    assert semi.segmentation.steps < plain.segmentation.steps and semi.total_seconds <= 1800
    speed = SPEEDS[semi.case]
    step = speed.seg_step_seconds + speed.seg_batch_seconds
    assert semi.segmentation.step_seconds == pytest.approx(2 * step + semi.case.seg_batch_size
                                                           * speed.eval_seconds_per_image)
    switched = StagePrediction.from_dict(plain.segmentation.to_dict()).rescaled(
        plain.segmentation.epochs, plain.segmentation.iterations_per_epoch, plain.segmentation.batch_size,
        semi_supervised=True)
    assert switched.step_seconds == pytest.approx(semi.segmentation.step_seconds)
    older = {k: v for k, v in plain.segmentation.to_dict().items()
             if k not in ("consistency_seconds", "semi_supervised")}
    assert StagePrediction.from_dict(older).step_seconds == pytest.approx(step)  # a plan from before: as it was


# --- the speed cache -------------------------------------------------------------------------------


def test_speeds_are_measured_once_per_key_and_again_when_the_key_changes(tmp_path, monkeypatch):
    from rbmnet.training import speed_probe

    calls = []
    monkeypatch.setattr(speed_probe, "measure_speed", lambda case, *args: calls.append(case) or speed(0.5))
    monkeypatch.setattr(speed_probe, "machine_description", lambda device: "cpu test|torch x|threads 2")
    cache_file = tmp_path / "speeds.json"
    first, cached = speed_probe.speed_for(LADDER[0], None, None, "cpu", (512, 512), SpeedCache(cache_file))
    assert not cached and len(calls) == 1
    again, cached = speed_probe.speed_for(LADDER[0], None, None, "cpu", (512, 512), SpeedCache(cache_file))
    assert cached and len(calls) == 1 and again == first  # a new process reads the file
    speed_probe.speed_for(LADDER[1], None, None, "cpu", (512, 512), SpeedCache(cache_file))
    assert len(calls) == 2  # another configuration
    monkeypatch.setattr(speed_probe, "machine_description", lambda device: "cpu test|torch x|threads 1")
    speed_probe.speed_for(LADDER[0], None, None, "cpu", (512, 512), SpeedCache(cache_file))
    assert len(calls) == 3  # another thread count: measured again
    cache_file.write_text("{not json")
    assert SpeedCache(cache_file).entries == {}  # a damaged cache is only a cold one


def test_the_probe_measures_a_tiny_configuration(tiny_env):
    import torch

    from rbmnet.data.dataset_json import load_dataset_json
    from rbmnet.paths import raw_dataset_dir
    from rbmnet.planning.plan import load_plan
    from rbmnet.paths import preprocessed_dataset_dir
    from rbmnet.tasks import build_task
    from rbmnet.training.speed_probe import measure_speed

    plan = load_plan(preprocessed_dataset_dir("Tiny") / "plans.json")
    task = build_task(plan, load_dataset_json(raw_dataset_dir("Tiny")))
    case = SpeedCase((64, 128), (8, 16, 32, 64, 128), 2, 2, task.output_channels)
    measured = measure_speed(case, plan, task, torch.device("cpu"), (64, 128))
    assert measured.measured
    for name in ("seg_step_seconds", "pretext_step_seconds", "seg_batch_seconds", "eval_seconds_per_image",
                 "seg_report_seconds_per_megapixel", "pretext_report_seconds_per_image"):
        assert 0 < getattr(measured, name) < 10, name


# --- the command ---------------------------------------------------------------------------------


def plan_cli(*args):
    from rbmnet.cli.plan_and_preprocess import main

    return CliRunner().invoke(main, ["-d", "Tiny", "-np", "1", *args])


def test_plan_with_a_budget_writes_speeds_and_predictions(tiny_env):
    from rbmnet.paths import preprocessed_dataset_dir

    result = plan_cli("-p", "budget", "--time-budget", "20m")
    assert result.exit_code == 0, result.output
    plan = json.loads((preprocessed_dataset_dir("Tiny") / "budget.json").read_text())
    derivation = plan["derivation"]
    predicted = derivation["predicted_seconds"]
    # from scratch by default: the fold alone fills the budget, the pretext stage is predicted apart
    assert predicted["measured"] and not predicted["pretrained"] and predicted["planned_seconds"] <= 20 * 60
    assert predicted["planned_seconds"] == pytest.approx(predicted["segmentation_fold"]["total_seconds"], abs=0.1)
    assert predicted["segmentation_fold"]["epochs"] == plan["segmentation"]["epochs"]
    assert derivation["time_budget"]["budget_seconds"] == 1200
    assert derivation["time_budget"]["chosen"]["segmentation.epochs"] == plan["segmentation"]["epochs"]
    assert list(derivation["speeds"].values())[0]["seg_step_seconds"] > 0
    assert "predicted: one fold" in result.output and "from scratch (pretraining is opt-in" in result.output
    pretrained = plan_cli("-p", "pretrained", "--time-budget", "20m", "--set", 'segmentation.initialisation="pretext"')
    assert pretrained.exit_code == 0, pretrained.output
    assert "predicted: pretext" in pretrained.output and "pretext + one fold" in pretrained.output
    predicted = json.loads((preprocessed_dataset_dir("Tiny") / "pretrained.json").read_text()
                           )["derivation"]["predicted_seconds"]
    assert predicted["pretrained"] and predicted["planned_seconds"] == predicted["pretext_plus_one_fold_seconds"] <= 1200


def test_explicit_set_values_win_over_the_budget(tiny_env):
    from rbmnet.paths import preprocessed_dataset_dir

    result = plan_cli("-p", "fixed", "--time-budget", "20m", "--set", "segmentation.epochs=3",
                      "--set", "segmentation.learning_rate=0.0005")
    assert result.exit_code == 0, result.output
    plan = json.loads((preprocessed_dataset_dir("Tiny") / "fixed.json").read_text())
    assert plan["segmentation"]["epochs"] == 3 and plan["segmentation"]["learning_rate"] == 0.0005
    assert plan["derivation"]["predicted_seconds"]["segmentation_fold"]["epochs"] == 3


def test_dry_run_writes_nothing(tmp_path, monkeypatch):
    from rbmnet.conversion.synthetic import write_synthetic_dataset

    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"RBMNET_{kind.upper()}", str(tmp_path / kind))
    write_synthetic_dataset("Tiny", num_labeled=10, num_unlabeled=2, num_test=0, height=64, width=128, seed=1,
                            progress=False)
    result = plan_cli("--time-budget", "20m", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "predicted: one fold" in result.output and "nothing written" in result.output
    assert not (tmp_path / "preprocessed").exists()


@pytest.mark.parametrize("budget", ["abc", "0", "-5m"])
def test_bad_budgets_fail_in_one_line_before_anything_is_written(tiny_env, budget):
    from rbmnet.paths import preprocessed_dataset_dir

    result = plan_cli("-p", "bad", "--time-budget", budget)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --time-budget") and "30m" in lines[0]
    assert not (preprocessed_dataset_dir("Tiny") / "bad.json").exists()


def test_a_budget_too_small_names_the_minimum(tiny_env):
    result = plan_cli("-p", "small", "--time-budget", "1s")
    assert result.exit_code != 0
    assert "too small" in result.output and "needs at least" in result.output


# --- training: predicted vs actual -----------------------------------------------------------------


def test_a_stage_reports_predicted_against_actual_and_keeps_both(tiny_env, capsys):
    from rbmnet.paths import preprocessed_dataset_dir, results_dataset_dir
    from rbmnet.training.segmentation import run_segmentation
    from rbmnet.training.setup import load_stage_inputs

    result = plan_cli("-p", "timed", "--time-budget", "20m", "--set", "segmentation.epochs=2",
                      "--set", "segmentation.iterations_per_epoch=2", "--set", 'segmentation.task="binary"')
    assert result.exit_code == 0, result.output
    assert (preprocessed_dataset_dir("Tiny") / "timed.json").is_file()
    folder = run_segmentation(load_stage_inputs("Tiny", "timed", {}), "0", init="scratch", device_name="cpu",
                              num_workers=0)
    record = json.loads((folder / "fold_0" / "duration.json").read_text())
    assert record["epochs"] == 2 and record["predicted"]["epochs"] == 2
    assert record["actual_seconds"] > 0 and record["predicted_seconds"] > 0
    assert record["deviation"] == pytest.approx((record["actual_seconds"] - record["predicted_seconds"])
                                                / record["predicted_seconds"], abs=0.01)
    assert "seg stage: predicted" in capsys.readouterr().out
    assert folder.parent == results_dataset_dir("Tiny")


def test_a_run_late_against_its_prediction_warns_once():
    from rbmnet.training.stage_clock import StageClock

    clock = StageClock(StagePrediction(epochs=4, iterations_per_epoch=10, batch_size=4, iteration_seconds=1.0,
                                       epoch_validation_seconds=0.0, startup_seconds=0.0, report_seconds=0.0))
    on_time = [{"epoch_seconds": 10.5}]
    assert clock.overrun_warning(on_time, epochs=4, epochs_this_run=1) is None
    late = [{"epoch_seconds": 16.0}]
    message = clock.overrun_warning(late, epochs=4, epochs_this_run=1)
    assert message.startswith("warning: on course to take 1 m 04 s") and "+60 %" in message
    assert clock.overrun_warning(late + [{"epoch_seconds": 20.0}], epochs=4, epochs_this_run=2) is None  # once


def test_the_demo_is_planned_by_a_time_budget_not_by_hand():
    from rbmnet.cli import demo

    commands = [args for _, args in demo._steps("predictions")]
    # the budget sizes the run; the one explicit value opts into pretraining, so that every stage runs
    assert sum(args.count("--set") for args in commands) == 1
    assert demo.DEMO_PLAN == ["--time-budget", demo.DEMO_TIME_BUDGET, "--set", 'segmentation.initialisation="pretext"']
    assert parse_duration(demo.DEMO_TIME_BUDGET) <= 5 * 60


def test_planning_for_another_gpu_uses_its_speed_file_or_says_the_speeds_are_assumed(tiny_env, tmp_path):
    other = SpeedCache(tmp_path / "speeds.json")  # as copied from the training machine
    other.put(SpeedCase((64, 128), (16, 32, 64, 128, 256), 8, 8, 33).key("cuda Some GPU|torch 2.13.0|threads 8"),
              speed(0.05))
    measured = plan_cli("--gpu-memory-gb", "8", "--speed-from", str(tmp_path / "speeds.json"), "--dry-run")
    assert measured.exit_code == 0, measured.output
    assert "speeds from --speed-from" in measured.output and "predicted: one fold" in measured.output
    assumed = plan_cli("--gpu-memory-gb", "8", "--dry-run")
    assert assumed.exit_code == 0, assumed.output
    assert "NOT measured" in assumed.output and "GPU: the paper's protocol" in assumed.output
    (tmp_path / "bad.json").write_text("[1, 2]")
    broken = plan_cli("--gpu-memory-gb", "8", "--speed-from", str(tmp_path / "bad.json"), "--dry-run")
    assert broken.exit_code != 0 and "not a speed file" in broken.output
