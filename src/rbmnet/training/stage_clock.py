"""A stage's duration against the plan's prediction: one warning when it runs late, the verdict at the end.

The plan (plans.json derivation `predicted_seconds`, written by the time planner) predicts each
stage from measured speeds; training options that change epochs, iterations or the batch rescale
that prediction. The actual duration is this process's start-up, the epochs in the log (earlier
sessions' too, after --continue) and the final report; duration.json in the run folder keeps both.
"""
from __future__ import annotations

import time
from pathlib import Path

from rbmnet.io.atomic import write_json
from rbmnet.layout import DURATION_JSON
from rbmnet.planning.durations import deviation, format_duration, predicted_vs_actual
from rbmnet.planning.time_budget import StagePrediction

OVERRUN_WARNING = 0.5  # warn once when the stage is on course to take this much longer than predicted
PREDICTION_KEYS = {"pretext": "pretext", "seg": "segmentation_fold"}


def stage_prediction(plan, kind: str, config) -> StagePrediction | None:
    """The plan's prediction for this stage with the run's epochs, iterations and batch, or None."""
    record = (plan.derivation or {}).get("predicted_seconds", {}).get(PREDICTION_KEYS[kind])
    if not record:
        return None
    try:
        planned = StagePrediction.from_dict(record)
    except (KeyError, TypeError):
        return None  # a prediction from an older rbmnet: no verdict rather than a wrong one
    semi = getattr(config, "semi_supervised", None)  # segmentation only
    return planned.rescaled(config.epochs, config.iterations_per_epoch, config.batch_size,
                            None if semi is None else semi != "off")


class StageClock:
    def __init__(self, expected: StagePrediction | None):
        self.expected = expected
        self.started = time.perf_counter()
        self.startup_seconds = 0.0
        self.warned = False
        self.report_started = 0.0

    def training_starts(self) -> None:
        self.startup_seconds = time.perf_counter() - self.started

    def overrun_warning(self, entries: list[dict], epochs: int, epochs_this_run: int) -> str | None:
        """After an epoch: one warning when the projected duration exceeds the prediction by > 50 %."""
        if self.expected is None or self.warned or epochs_this_run < 1:
            return None
        recent = [e["epoch_seconds"] for e in entries[-epochs_this_run:]]
        projected = (self.startup_seconds + sum(e["epoch_seconds"] for e in entries)
                     + (epochs - len(entries)) * sum(recent) / len(recent) + self.expected.report_seconds)
        if deviation(self.expected.total_seconds, projected) <= OVERRUN_WARNING:
            return None
        self.warned = True
        return (f"warning: on course to take {format_duration(projected)}, "
                f"{deviation(self.expected.total_seconds, projected):+.0%} over the predicted "
                f"{format_duration(self.expected.total_seconds)} (other processes using the cores? the plan's "
                f"speeds were measured on an idle machine)").replace("%", " %")

    def report_starts(self) -> None:
        self.report_started = time.perf_counter()

    def finish(self, folder: Path, entries: list[dict]) -> str | None:
        """Write duration.json; returns the line to print (None without a prediction)."""
        report = time.perf_counter() - self.report_started if self.report_started else 0.0
        training = sum(e.get("epoch_seconds", 0.0) for e in entries)
        actual = self.startup_seconds + training + report
        record = {"actual_seconds": round(actual, 1), "startup_seconds": round(self.startup_seconds, 1),
                  "training_seconds": round(training, 1), "report_seconds": round(report, 1),
                  "epochs": len(entries), "predicted": self.expected.to_dict() if self.expected else None}
        if self.expected is not None:
            record["predicted_seconds"] = round(self.expected.total_seconds, 1)
            record["deviation"] = round(deviation(self.expected.total_seconds, actual), 4)
        write_json(Path(folder) / DURATION_JSON, record)
        if self.expected is None:
            return None
        return predicted_vs_actual(self.expected.total_seconds, actual)
