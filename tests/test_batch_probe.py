"""Batch size from measured GPU memory (planning/batch_probe.py): the search, the plan, the CPU refusal."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from rbmnet.errors import RbmnetError
from rbmnet.training.batch_probe import BatchProbe, largest_fitting_batch, probe_batch_size
from rbmnet.planning.plan import NetworkConfig
from rbmnet.planning.planner import MAX_BATCH, MemoryBudget, generate_plan

GIB = 2 ** 30


def _linear_memory(per_sample: int, out_of_memory_from: int | None = None):
    tried = []

    def step_peak(batch_size: int):
        tried.append(batch_size)
        if out_of_memory_from is not None and batch_size >= out_of_memory_from:
            return None
        return GIB + per_sample * batch_size

    return step_peak, tried


def test_doubling_then_bisection_finds_the_largest_fitting_size():
    step_peak, tried = _linear_memory(GIB)
    size, peaks = largest_fitting_batch(step_peak, limit_bytes=21 * GIB)  # 1 + b GiB <= 21: b <= 20
    assert size == 20
    assert tried == [2, 4, 8, 16, 32, 24, 20, 22, 21]
    assert peaks[20] == 21 * GIB and peaks[32] == 33 * GIB


def test_out_of_memory_counts_as_not_fitting():
    step_peak, _ = _linear_memory(GIB // 8, out_of_memory_from=11)
    size, peaks = largest_fitting_batch(step_peak, limit_bytes=100 * GIB)
    assert size == 10 and peaks[16] is None


def test_search_stops_at_the_largest_size_and_reports_nothing_fitting():
    step_peak, tried = _linear_memory(1)
    assert largest_fitting_batch(step_peak, limit_bytes=100 * GIB, largest=32)[0] == 32
    assert max(tried) == 32
    step_peak, _ = _linear_memory(GIB)
    assert largest_fitting_batch(step_peak, limit_bytes=2 * GIB)[0] == 0


def test_probed_batch_size_goes_into_the_plan_clamped():
    fingerprint = {"aggregate": {"median_shape": [512, 512]}, "num_labeled": 300, "num_unlabeled": 0, "num_test": 0}
    budget = MemoryBudget("cuda (test)", 140 * GIB, 112 * GIB, "test")
    probe = BatchProbe(batch_size=23, limit_bytes=90 * GIB, free_bytes=130 * GIB, device="cuda:0 (test)",
                       peaks={2: GIB, 32: None})
    plan = generate_plan(fingerprint, "T", budget=budget, probe=probe)
    assert plan.pretext.batch_size == 23
    assert plan.segmentation.batch_size == 23  # 0.2 of the smallest fold's 240 training cases = 48 >= 23
    assert plan.pretext.iterations_per_epoch == -(-270 // 23)
    assert "measured" in plan.derivation["batch_size_rule"]
    assert plan.derivation["batch_size_probe"]["peaks"] == {"2": GIB, "32": None}
    assert plan.augmentation.data_path == "device"
    big = BatchProbe(batch_size=500, limit_bytes=1, free_bytes=1, device="cuda")
    assert generate_plan(fingerprint, "T", budget=budget, probe=big).pretext.batch_size == MAX_BATCH
    modelled = generate_plan(fingerprint, "T", budget=budget)
    assert "batch_size_probe" not in modelled.derivation


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_the_probe_refuses_and_the_command_warns(roots):
    with pytest.raises(RbmnetError, match="needs a CUDA GPU"):
        probe_batch_size(NetworkConfig(features_per_stage=[4, 8]), [32, 32], largest=4)

    from rbmnet.cli.plan_and_preprocess import main
    from rbmnet.conversion.synthetic import write_synthetic_dataset

    write_synthetic_dataset("Tiny", num_labeled=6, num_unlabeled=0, num_test=0, height=64, width=64, seed=0,
                            progress=False)
    result = CliRunner().invoke(main, ["-d", "Tiny", "--input-size", "64", "64", "--probe-batch-size", "-q"])
    assert result.exit_code == 0, result.output
    assert "needs a CUDA GPU" in result.output
    assert (roots["preprocessed"] / "Tiny" / "plans.json").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_probe_on_cuda_measures_growing_peaks():
    probe = probe_batch_size(NetworkConfig(features_per_stage=[8, 16, 32, 64, 128]), [128, 128], largest=8)
    assert probe.batch_size == 8
    assert probe.peaks[2] < probe.peaks[4] < probe.peaks[8] <= probe.limit_bytes
