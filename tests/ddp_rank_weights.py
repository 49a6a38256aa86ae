"""`rbmnet_train` under torchrun, each rank recording a digest of the weights it ends with (test_distributed.py).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_rank_weights.py DIGESTS seg 0 -d Tiny

Only rank 0 writes checkpoints, so the other ranks' weights cannot be seen in the results folder. This
script, not the training code, observes them: before any training stage is imported it wraps
rbmnet.training.loop.train (the epoch loop every stage runs, and imports by name); when train returns, rank r writes
DIGESTS/rank<r>.txt holding `state_digest` of its network's parameters and buffers. The rest of the
command line goes to rbmnet_train unchanged.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path


def state_digest(state: dict) -> str:
    """SHA-256 of every tensor of a state_dict, names included, in order."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)

    from rbmnet.model.checkpoint import unwrap_network
    from rbmnet.training import loop

    train = loop.train

    def train_and_record(run, log=None):
        result = train(run, log)
        (folder / f"rank{run.rank}.txt").write_text(state_digest(unwrap_network(run.network).state_dict()) + "\n")
        return result

    loop.train = train_and_record  # the stages are imported by the command below, so they bind the wrapper
    from rbmnet.cli.train import main as train_cli

    train_cli(sys.argv[2:], prog_name="rbmnet_train")


if __name__ == "__main__":
    main()
