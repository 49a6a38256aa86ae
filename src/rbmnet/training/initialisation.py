"""Starting weights for segmentation: the pretext network's, all but its output head."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rbmnet.errors import RbmnetError
from rbmnet.model.checkpoint import load_checkpoint
from rbmnet.planning.plan import Plan

HEAD_PREFIX = "head."


@dataclass
class InitialisationReport:
    source: str
    loaded: int
    skipped: dict[str, str]  # tensor name -> why

    def describe(self) -> str:
        reasons = sorted(set(self.skipped.values()))
        return (f"initialised from {self.source}: loaded {self.loaded} tensors, skipped {len(self.skipped)}"
                + (f" ({'; '.join(reasons)})" if reasons else ""))


def load_pretrained(network: torch.nn.Module, checkpoint_path: Path, network_config: dict) -> InitialisationReport:
    """Load every tensor but the output head; any other mismatch is an error, never a partial load."""
    checkpoint = load_checkpoint(checkpoint_path)
    # read as a Plan: an older checkpoint's plan may hold keys since removed (planning/plan.py REMOVED_KEYS)
    source_config = Plan.from_dict(checkpoint["plan"], source=f"{checkpoint_path} plan").to_dict()["network"]
    if source_config != network_config:
        differing = sorted(k for k in set(source_config) | set(network_config)
                           if source_config.get(k) != network_config.get(k))
        raise RbmnetError(f"{checkpoint_path}: its plan's network differs from this one in {', '.join(differing)} "
                          f"({[source_config.get(k) for k in differing]} vs {[network_config.get(k) for k in differing]}); "
                          f"pretrain with the same plan")
    source = checkpoint["network"]
    target = network.state_dict()
    skipped = {name: "output head is task-specific" for name in source if name.startswith(HEAD_PREFIX)}
    body = {name: tensor for name, tensor in source.items() if not name.startswith(HEAD_PREFIX)}
    missing = sorted(n for n in target if not n.startswith(HEAD_PREFIX) and n not in body)
    unexpected = sorted(n for n in body if n not in target)
    mismatched = sorted(n for n in body if n in target and body[n].shape != target[n].shape)
    if missing or unexpected or mismatched:
        raise RbmnetError(f"{checkpoint_path}: does not fit this network (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, shape mismatch {mismatched[:3]})")
    network.load_state_dict(body, strict=False)
    return InitialisationReport(str(checkpoint_path), len(body), skipped)
