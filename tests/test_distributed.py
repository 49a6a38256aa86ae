"""Data-parallel training (training/distributed.py): real 2-process runs on the CPU with the gloo backend."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ddp_rank_weights import state_digest
from rbmnet.errors import RbmnetError
from rbmnet.model.checkpoint import load_checkpoint
from rbmnet.training.distributed import Distributed, all_reduce_sum, environment_ranks, setup_distributed
from rbmnet.tasks.losses import dice_bce_loss
from training_factory import make_tiny_dataset

REPO = Path(__file__).resolve().parents[1]
TINY = {"segmentation.task": "binary",
        "network.features_per_stage": [4, 8, 16, 32, 64], "pretext.batch_size": 2, "segmentation.batch_size": 2,
        "pretext.iterations_per_epoch": 2, "segmentation.iterations_per_epoch": 2}


# --- one process --------------------------------------------------------------------------------

def test_without_torchrun_everything_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context, device = setup_distributed("cpu")
    assert context == Distributed() and not context.enabled and context.is_writer and device.type == "cpu"
    assert context.describe() == ""
    tensor = torch.ones(3, requires_grad=True)
    assert all_reduce_sum(tensor) is tensor
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RbmnetError, match="set by torchrun"):
        environment_ranks()


def test_state_digest_sees_every_weight_and_buffer():
    """The digest the torchrun test compares ranks by (tests/ddp_rank_weights.py)."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    same = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    same.load_state_dict(network.state_dict())
    assert state_digest(network.state_dict()) == state_digest(same.state_dict())
    same[1].running_mean[0] += 1e-6
    assert state_digest(network.state_dict()) != state_digest(same.state_dict())


def test_the_loop_deals_iterations_out_to_ranks(tmp_path):
    """Rank r of W makes batches (epoch, step * W + r) and runs ceil(iterations / W) steps."""
    from rbmnet.training.loop import TrainingRun, train

    asked = []

    def make_batch(epoch, iteration):
        asked.append((epoch, iteration))
        return {"image": torch.rand(2, 1, 4, 4)}

    network = torch.nn.Conv2d(1, 1, 1)
    run = TrainingRun(folder=tmp_path, network=network, optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
                      device=torch.device("cpu"), epochs=2, iterations_per_epoch=3, make_batch=make_batch,
                      batch_loss=lambda net, batch: net(batch["image"]).abs().mean(), validate=lambda net: {},
                      checkpoint_content={}, num_workers=0, is_writer=False, rank=1, world_size=2)
    log = train(run)
    assert asked == [(0, 1), (0, 3), (1, 1), (1, 3)]
    assert len(log.entries) == 2 and log.entries[0]["train_images_per_second"] > 0
    assert list(tmp_path.iterdir()) == []  # not the writer: no log, no checkpoint


# --- two processes in one gloo group (spawned) ---------------------------------------------------

def _two_rank_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from rbmnet.training.distributed import broadcast_buffers, mean_over_ranks, on_writer

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    context = Distributed(rank, world_size, rank, "gloo")
    images, targets, network = _gradient_problem()
    ddp = torch.nn.parallel.DistributedDataParallel(network)
    mine = slice(2 * rank, 2 * rank + 2)
    dice_bce_loss(ddp(images[mine]), targets[mine], sums_reducer=all_reduce_sum).backward()
    global_grads = [p.grad.clone() for p in network.parameters()]
    ddp.zero_grad()
    dice_bce_loss(ddp(images[mine]), targets[mine]).backward()  # Dice of the local half only
    local_grads = [p.grad.clone() for p in network.parameters()]

    batch_norm = torch.nn.BatchNorm1d(3)
    batch_norm.running_mean.fill_(float(rank + 1))
    broadcast_buffers(batch_norm)

    calls = []
    value = on_writer(context, lambda: calls.append(rank) or "made by rank 0")
    try:
        on_writer(context, _refuse)
        error = None
    except RbmnetError as exc:
        error = str(exc)
    torch.save({"global": global_grads, "local": local_grads, "mean": mean_over_ranks(float(rank), torch.device("cpu")),
                "running_mean": batch_norm.running_mean.clone(), "calls": calls, "value": value, "error": error},
               Path(out_dir) / f"rank{rank}.pt")
    # Tear down together and with no DDP reducer alive: a rank destroying its gloo group while the
    # other still talks to it, or gloo threads outliving the Python objects, aborted a CI run (SIGABRT).
    del ddp
    dist.barrier()
    dist.destroy_process_group()


def _refuse():
    raise RbmnetError("folder has a checkpoint")


def _gradient_problem():
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(4, 2, 8, 8, generator=generator)
    targets = (torch.rand(4, 1, 8, 8, generator=generator) > 0.6).float()
    targets[2:] *= 0  # the halves differ a lot: a per-rank Dice would be far from the global one
    torch.manual_seed(0)
    return images, targets, torch.nn.Conv2d(2, 1, 3, padding=1)


def test_two_ranks_compute_the_global_batch_dice_gradient_and_share_state(tmp_path):
    mp.spawn(_two_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    images, targets, network = _gradient_problem()
    dice_bce_loss(network(images), targets).backward()  # one process holding the whole batch
    reference = [p.grad for p in network.parameters()]
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for got, want in zip(result["global"], reference):
            assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
        # the control: without the all-reduce the gradient is visibly another one
        assert max((got - want).abs().max().item() for got, want in zip(result["local"], reference)) > 1e-3
        assert result["mean"] == pytest.approx(0.5)
        assert torch.equal(result["running_mean"], torch.ones(3))  # rank 0's statistics everywhere
        assert result["value"] == "made by rank 0" and result["error"] == "folder has a checkpoint"
        assert result["calls"] == ([0] if rank == 0 else [])


# --- torchrun, two CPU processes, the real command -----------------------------------------------

@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    env = make_tiny_dataset(root, num_labeled=10, num_unlabeled=4, num_test=0, seed=1, overrides=TINY)
    return root, env


def _torchrun(env: dict, digest_dir: Path, *args: str) -> str:
    """rbmnet_train under torchrun, 2 CPU ranks; each rank's final-weights digest lands in digest_dir."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tests" / "ddp_rank_weights.py"), str(digest_dir), *args, "-d", "Tiny", "-np", "0"]
    environment = {**os.environ, **env, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=environment, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _digests(folder: Path) -> list[str]:
    missing = [r for r in (0, 1) if not (folder / f"rank{r}.txt").is_file()]
    assert not missing, f"ranks {missing} wrote no digest: does training still run loop.train? (ddp_rank_weights.py)"
    return [(folder / f"rank{r}.txt").read_text().strip() for r in (0, 1)]


def test_torchrun_two_ranks_stay_in_sync_write_once_and_resume(tiny_env):
    """rbmnet_train seg under torchrun: 2 gloo ranks, the Dice all-reduced, 2 iterations per epoch dealt
    out (one step per rank), then resumed by both ranks from checkpoint_latest.

    Both ranks end with the same weights: tests/ddp_rank_weights.py wraps the shared epoch loop from
    outside the training code and has each rank write a digest of its final parameters and buffers
    (rank 1 writes no checkpoint, so this is where its weights become visible). Rank 0's digest equals
    that of the checkpoint it wrote, and after --continue the ranks agree again on weights that differ
    from the first run's: a rank that had not loaded checkpoint_latest would disagree."""
    root, env = tiny_env
    fold = Path(env["RBMNET_RESULTS"]) / "Tiny" / "seg__resunet__scratch__frac0.2__plans" / "fold_0"
    output = _torchrun(env, root / "d1", "seg", "0", "--init", "scratch", "--epochs", "1")
    assert "x 2 ranks (gloo)" in output
    first = _digests(root / "d1")
    assert first[0] == first[1] == state_digest(load_checkpoint(fold / "checkpoint_final.pt")["network"])

    _torchrun(env, root / "d2", "seg", "0", "--init", "scratch", "--epochs", "2", "--continue")
    resumed = _digests(root / "d2")
    assert resumed[0] == resumed[1] != first[0]  # a rank that did not load the checkpoint would differ
    assert resumed[0] == state_digest(load_checkpoint(fold / "checkpoint_final.pt")["network"])
    assert [json.loads(line)["epoch"] for line in (fold / "training_log.jsonl").read_text().splitlines()] == [1, 2]
    assert (fold / "validation" / "summary.json").is_file()
    # one set of outputs, written by rank 0: no per-rank duplicates anywhere
    results = Path(env["RBMNET_RESULTS"])
    assert [p.parent for p in results.rglob("checkpoint_final.pt")] == [fold]
    assert [p.parent for p in results.rglob("training_log.jsonl")] == [fold]
    assert not [p for p in results.rglob("*") if "rank" in p.name]
