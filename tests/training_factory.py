"""A tiny synthetic dataset, planned for fast CPU training, shared by the training tests."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

TINY_PLAN = {
    "network.features_per_stage": [8, 16, 32, 64, 128],
    "pretext.batch_size": 4, "pretext.iterations_per_epoch": 4, "pretext.epochs": 2,
    "pretext.learning_rate": 0.002,
    "segmentation.batch_size": 4, "segmentation.iterations_per_epoch": 4, "segmentation.epochs": 2,
    "segmentation.learning_rate": 0.002,
    # the synthetic set is FDI-numbered, so the planner would choose the teeth task; most training tests
    # are about the binary task and say so here (teeth tests override it)
    "segmentation.task": "binary",
}


def make_tiny_dataset(root: Path, name: str = "Tiny", num_labeled: int = 15, num_unlabeled: int = 5,
                      num_test: int = 2, seed: int = 3, overrides: dict | None = None) -> dict[str, str]:
    """Write raw + preprocessed 64 x 128 synthetic data under `root` (plan: TINY_PLAN unless `overrides`);
    returns the environment that points rbmnet at it."""
    env = {"RBMNET_RAW": str(root / "raw"), "RBMNET_PREPROCESSED": str(root / "pre"),
           "RBMNET_RESULTS": str(root / "results")}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from rbmnet.cli.plan_and_preprocess import plan_and_preprocess
        from rbmnet.conversion.synthetic import write_synthetic_dataset

        write_synthetic_dataset(name, num_labeled=num_labeled, num_unlabeled=num_unlabeled, num_test=num_test,
                                height=64, width=128, seed=seed, progress=False)
        plan_and_preprocess(name, num_processes=1, overrides=dict(TINY_PLAN if overrides is None else overrides),
                            input_size=[64, 128], verbose=False)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return env


def train_tiny_fold(root: Path, overrides: dict, num_labeled: int = 10, num_test: int = 2) -> tuple[dict, Path]:
    """A tiny dataset planned with `overrides` and its fold 0 trained from scratch on one thread, a few
    iterations; returns (environment, model folder)."""
    import pytest
    import torch

    from rbmnet.training.segmentation import run_segmentation
    from rbmnet.training.setup import load_stage_inputs

    env = make_tiny_dataset(root, num_labeled=num_labeled, num_unlabeled=0, num_test=num_test, overrides=overrides)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        torch.set_num_threads(1)
        folder = run_segmentation(load_stage_inputs("Tiny", "plans", {}), "0", init="scratch", device_name="cpu",
                                  num_workers=0)
    return env, folder


@contextlib.contextmanager
def pointed_at(env: dict[str, str]):
    """rbmnet's roots set to `env` and torch on one thread (tiny networks: a second thread only adds
    OpenMP overhead) for the duration; both restored afterwards. For module-scoped fixtures."""
    import pytest
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            yield
    finally:
        torch.set_num_threads(threads)
