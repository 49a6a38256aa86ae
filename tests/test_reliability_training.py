"""Training under bad plans, competing runs and signals: one line naming the file or key, and never a lost
model (plan values checked before anything is deleted, --continue only with the plan it started with, one
run per folder, SIGTERM / Ctrl-C stop cleanly, batch workers die with their parent)."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rbmnet.cli.plan_and_preprocess import main as plan_cli
from rbmnet.cli.train import main as train_cli
from rbmnet.errors import RbmnetError
from rbmnet.planning.plan import Plan, apply_overrides, load_plan
from rbmnet.training.run_lock import RunLock
from rbmnet.training.stopping import continue_command

PRETEXT = "results/Tiny/pretext__resunet__plans"
SEG = "results/Tiny/seg__resunet__scratch__frac0.2__plans"


def train(*args):
    return CliRunner().invoke(train_cli, list(args))


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[-1]


def plans_json(root: Path) -> Path:
    return root / "pre" / "Tiny" / "plans.json"


@contextlib.contextmanager
def edited_plan(root: Path, section: str, key: str, value):
    """plans.json with one value edited by hand, restored afterwards; yields its path."""
    path = plans_json(root)
    original = path.read_text()
    try:
        data = json.loads(original)
        data[section][key] = value
        path.write_text(json.dumps(data))
        yield path
    finally:
        path.write_text(original)


# --- plan values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, says", [
    ("segmentation.epochs", -2, "segmentation.epochs = -2 must be >= 1"),
    ("pretext.batch_size", 0, "pretext.batch_size = 0 must be >= 1"),
    ("segmentation.iterations_per_epoch", "10", 'segmentation.iterations_per_epoch = "10" must be an integer'),
    ("segmentation.fraction", 1.5, "segmentation.fraction = 1.5 must be in (0, 1]"),
    ("network.architecture", "vit", 'network.architecture = "vit" must be one of resunet'),
    ("input_size", [60, 128], "input_size = [60, 128] must be multiples of 16"),
    ("segmentation.optimizer", "lion", "must be one of adam, adamw, sgd"),
])
def test_every_plan_value_is_checked_when_a_plan_is_built(key, value, says):
    data = Plan("X").to_dict()
    section, _, leaf = key.rpartition(".")
    (data[section] if section else data)[leaf] = value
    with pytest.raises(RbmnetError, match="plans.json: .*" + re.escape(says)):
        Plan.from_dict(data, "plans.json")
    if not (isinstance(value, str) and key.endswith("iterations_per_epoch")):  # --set checks types itself
        with pytest.raises(RbmnetError, match="--set: .*" + re.escape(says)):
            apply_overrides(Plan("X"), {key: value})


def test_hand_edited_plan_is_refused_before_training_touches_anything(tiny_env):
    with edited_plan(tiny_env, "segmentation", "epochs", -2) as path:
        line = one_line_error(train("seg", "1", "-d", "Tiny", "-np", "0", "--init", "scratch"))
    assert str(path) in line and "segmentation.epochs = -2" in line
    assert not (tiny_env / SEG / "fold_1").exists(), "no untrained model may be saved"


def test_set_refuses_impossible_values_at_plan_time(tiny_env):
    before = plans_json(tiny_env).read_bytes()
    result = CliRunner().invoke(plan_cli, ["-d", "Tiny", "--input-size", "64", "128", "--set",
                                           "segmentation.batch_size=0"])
    assert "segmentation.batch_size = 0 must be >= 1" in one_line_error(result)
    assert plans_json(tiny_env).read_bytes() == before


# --- nothing is deleted before everything is checked --------------------------------------------

def test_overwrite_with_an_invalid_plan_keeps_the_finished_model(tiny_env):
    assert train("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite").exit_code == 0
    final = tiny_env / PRETEXT / "checkpoint_final.pt"
    before = final.read_bytes()
    with edited_plan(tiny_env, "pretext", "learning_rate", -1):
        line = one_line_error(train("pretext", "-d", "Tiny", "-np", "0", "--overwrite"))
    assert "pretext.learning_rate = -1" in line
    assert final.read_bytes() == before


def test_overwrite_whose_initialisation_fails_keeps_the_finished_model(tiny_env, tmp_path):
    assert train("seg", "0", "-d", "Tiny", "-np", "0", "--init", "scratch", "--epochs", "1", "--overwrite").exit_code == 0
    final = tiny_env / SEG / "fold_0" / "checkpoint_final.pt"
    before = final.read_bytes()
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, foreign)  # a bare state_dict from another program
    line = one_line_error(train("seg", "0", "-d", "Tiny", "-np", "0", "--init", str(foreign), "--epochs", "1",
                                "--overwrite"))
    assert f"{foreign}: not an rbmnet checkpoint: it holds a bare state_dict" in line
    assert final.read_bytes() == before


# --- --continue -----------------------------------------------------------------------------------

def test_continue_after_the_plan_changed_is_refused_and_changes_nothing(tiny_env):
    assert train("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite").exit_code == 0
    model_plan = tiny_env / PRETEXT / "plans.json"
    before = model_plan.read_bytes(), (tiny_env / PRETEXT / "checkpoint_latest.pt").read_bytes()
    line = one_line_error(train("pretext", "-d", "Tiny", "--epochs", "2", "-np", "0", "--continue",
                                "--set", "network.features_per_stage=[4,8,16,32,64]"))
    assert "network.features_per_stage: [8, 16, 32, 64, 128] -> [4, 8, 16, 32, 64]" in line and "--overwrite" in line
    assert (model_plan.read_bytes(), (tiny_env / PRETEXT / "checkpoint_latest.pt").read_bytes()) == before
    # more epochs is what --continue is for
    assert train("pretext", "-d", "Tiny", "--epochs", "2", "-np", "0", "--continue").exit_code == 0


def test_continue_with_fewer_epochs_than_trained_is_refused(tiny_env):
    assert train("pretext", "-d", "Tiny", "--epochs", "2", "-np", "0", "--overwrite").exit_code == 0
    final = tiny_env / PRETEXT / "checkpoint_final.pt"
    before = final.read_bytes()
    line = one_line_error(train("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--continue"))
    assert "2 epochs trained, the plan asks for 1" in line and "--epochs 2 or more" in line
    assert final.read_bytes() == before


def test_a_fold_with_another_plan_than_the_models_other_folds_is_refused(tiny_env):
    assert train("seg", "0", "-d", "Tiny", "-np", "0", "--init", "scratch", "--epochs", "1", "--overwrite").exit_code == 0
    line = one_line_error(train("seg", "1", "-d", "Tiny", "-np", "0", "--init", "scratch", "--epochs", "1",
                                "--set", "segmentation.learning_rate=0.01"))
    assert "fold_0 trained with another plan" in line and "segmentation.learning_rate: 0.002 -> 0.01" in line
    assert not (tiny_env / SEG / "fold_1" / "checkpoint_final.pt").exists()
    assert load_plan(tiny_env / SEG / "plans.json").segmentation.learning_rate == 0.002


# --- one run per folder ---------------------------------------------------------------------------

def test_a_second_run_on_a_busy_folder_is_refused_naming_the_pid(tiny_env):
    assert train("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite").exit_code == 0
    with RunLock(tiny_env / PRETEXT):
        line = one_line_error(train("pretext", "-d", "Tiny", "--epochs", "2", "-np", "0", "--continue"))
    assert f"another rbmnet run (pid {os.getpid()})" in line
    # once its holder let go, the lock file (its pid still inside) is not in the way
    assert (tiny_env / PRETEXT / ".lock").read_text() == str(os.getpid())
    assert train("pretext", "-d", "Tiny", "--epochs", "2", "-np", "0", "--continue").exit_code == 0


def test_stale_lock_file_of_a_killed_run_does_not_block(tiny_env):
    (tiny_env / PRETEXT).mkdir(parents=True, exist_ok=True)
    (tiny_env / PRETEXT / ".lock").write_text("999999")
    assert train("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite").exit_code == 0
    assert (tiny_env / PRETEXT / ".lock").read_text() == str(os.getpid()), "the run took the lock over"


# --- signals and worker processes ------------------------------------------------------------------

def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rbmnet.cli.train", *args]


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is missing


def _wait_for_epoch(folder: Path, process: subprocess.Popen, epoch: int = 1) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        latest = folder / "checkpoint_latest.pt"
        if latest.exists() and torch.load(latest, weights_only=True)["epoch"] >= epoch:
            return
        time.sleep(0.1)
    raise AssertionError(f"no epoch {epoch} checkpoint in {folder}")


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
SLOW_EPOCHS = ["--set", "pretext.iterations_per_epoch=30"]  # a few seconds per epoch: signals land mid-run


@needs_proc
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_cleanly_and_say_how_to_continue(tiny_env, tmp_path, stop):
    env = {**os.environ, "RBMNET_RESULTS": str(tmp_path / "results"), "PYTHONUNBUFFERED": "1"}
    args = ["pretext", "-d", "Tiny", "--epochs", "4", "-np", "2", *SLOW_EPOCHS]
    process = subprocess.Popen(_command(*args), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "results" / "Tiny" / "pretext__resunet__plans"
    _wait_for_epoch(folder, process)
    workers = _children(process.pid)
    assert len(workers) >= 2, "the batch workers should be running"
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"stopped by {stop.name} after epoch ") and "Traceback" not in stderr, stderr[-2000:]
    assert not any(_alive(pid) for pid in workers)
    command = shlex.split(last.split("continue with: ", 1)[1])
    assert command[:3] == ["python", "-m", "rbmnet.cli.train"] and command[-1] == "--continue"
    resumed = subprocess.run([sys.executable, *command[1:]], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(folder / "checkpoint_final.pt", weights_only=True)["epoch"] == 4


@needs_proc
def test_batch_workers_die_with_a_killed_parent(tiny_env, tmp_path):
    env = {**os.environ, "RBMNET_RESULTS": str(tmp_path / "results")}
    process = subprocess.Popen(_command("pretext", "-d", "Tiny", "--epochs", "4", "-np", "2", *SLOW_EPOCHS),
                               env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_epoch(tmp_path / "results" / "Tiny" / "pretext__resunet__plans", process)
    workers = _children(process.pid)
    assert len(workers) >= 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "orphaned batch workers"


def test_continue_command_swaps_overwrite_for_continue():
    assert continue_command(["/x/bin/rbmnet_train", "seg", "0", "-d", "My Data", "--overwrite"]) == \
        "rbmnet_train seg 0 -d 'My Data' --continue"
    assert continue_command(["/x/rbmnet/cli/train.py", "pretext", "--continue"]) == \
        "python -m rbmnet.cli.train pretext --continue"


# --- messages -------------------------------------------------------------------------------------

def test_inline_batches_are_not_called_workers(tiny_env):
    result = train("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite")
    assert result.exit_code == 0
    assert "batches made inline in the main process (-np 0" in result.output
    assert "worker process" not in result.output


def test_predicting_with_a_pretext_model_names_a_command_that_works(tiny_env, tmp_path):
    from rbmnet.cli.predict import main as predict_cli

    assert train("pretext", "-d", "Tiny", "--epochs", "1", "-np", "0", "--overwrite").exit_code == 0
    result = CliRunner().invoke(predict_cli, ["-i", str(tiny_env / "raw" / "Tiny" / "imagesTs"), "-o",
                                              str(tmp_path / "out"), "-m", str(tiny_env / PRETEXT)])
    line = one_line_error(result)
    assert "is a pretext model" in line and "-f pretext" not in line
    hint = line.split("train one from it with ", 1)[1].split(",", 1)[0].replace("FOLD", "0")
    assert hint.startswith("rbmnet_train seg 0 -d Tiny --init pretext")
    assert train(*shlex.split(hint)[1:], "-np", "0", "--epochs", "1", "--overwrite").exit_code == 0
