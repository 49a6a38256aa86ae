"""`rbmnet_demo` (`make demo`): the whole pipeline on the embedded synthetic dataset, as real commands.

Each step prints the command a user would type and runs it in this process, so the demo doubles as
a worked example. A time budget keeps it to a few minutes on a 2-core laptop.
"""
from __future__ import annotations

import shlex
import sys
import time

import click

from rbmnet.conversion.synthetic import SOURCE as SYNTHETIC_SOURCE
from rbmnet.data.dataset_json import load_dataset_json
from rbmnet.errors import RbmnetError
from rbmnet.layout import DATASET_JSON, IMAGES_TS, LABELS_TS
from rbmnet.paths import raw_dataset_dir, results_dataset_dir

DATASET = "Teeth"

# Small on purpose: the demo shows every stage working, not the published numbers. The planner
# sizes the run to DEMO_TIME_BUDGET (pretext + one fold) from speeds it measures on this machine.
# Pretraining is opt-in (the default starts from scratch); the demo opts in so that every command runs.
DEMO_TIME_BUDGET = "4m"
DEMO_PLAN = ["--time-budget", DEMO_TIME_BUDGET, "--set", 'segmentation.initialisation="pretext"']


def _steps(predictions: str) -> list[tuple[str, list[str]]]:
    raw = raw_dataset_dir(DATASET)
    return [
        ("rbmnet_convert", ["synthetic", "-d", DATASET, "--overwrite"]),
        ("rbmnet_plan_and_preprocess", ["-d", DATASET, "--overwrite-plans", *DEMO_PLAN]),
        ("rbmnet_train", ["pretext", "-d", DATASET, "--overwrite"]),
        ("rbmnet_train", ["seg", "0", "-d", DATASET, "--overwrite"]),
        ("rbmnet_predict", ["-i", str(raw / IMAGES_TS), "-o", predictions, "-d", DATASET, "--overlay"]),
        ("rbmnet_evaluate", ["-r", str(raw / LABELS_TS), "-p", predictions]),
    ]


def _command(name: str):
    from rbmnet.cli import convert, evaluate, plan_and_preprocess, predict, train

    return {"rbmnet_convert": convert.main, "rbmnet_plan_and_preprocess": plan_and_preprocess.main,
            "rbmnet_train": train.main, "rbmnet_predict": predict.main, "rbmnet_evaluate": evaluate.main}[name]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--stop-after", type=click.Choice(["convert", "plan", "pretext", "seg", "predict", "evaluate"]),
              default="evaluate", show_default=True, help="Run the pipeline up to this stage.")
def main(stop_after):
    """Run convert -> plan -> pretext -> seg fold 0 -> predict -> evaluate on synthetic radiographs."""
    raw = raw_dataset_dir(DATASET)
    if (raw / DATASET_JSON).is_file():
        try:
            source = load_dataset_json(raw).get("source", "")
        except RbmnetError:
            source = ""
        if source != SYNTHETIC_SOURCE:
            click.echo(f"error: {raw} holds a dataset that is not the synthetic demo; "
                       f"set RBMNET_RAW/RBMNET_PREPROCESSED/RBMNET_RESULTS to other folders", err=True)
            sys.exit(2)
    predictions = str(results_dataset_dir(DATASET) / "demo_predictions")
    order = ["convert", "plan", "pretext", "seg", "predict", "evaluate"]
    started = time.perf_counter()
    for stage, (name, args) in zip(order, _steps(predictions)):
        click.secho(f"\n$ {name} {shlex.join(args)}", bold=True)
        step_started = time.perf_counter()
        try:
            _command(name).main(args, prog_name=name, standalone_mode=False)
        except SystemExit as exc:  # commands exit non-zero on failure; the demo stops there
            if exc.code:
                sys.exit(exc.code)
        click.echo(f"[{stage} took {time.perf_counter() - step_started:.1f} s]")
        if stage == stop_after:
            break
    click.secho(f"\ndemo finished in {time.perf_counter() - started:.1f} s", bold=True)
