"""Starting weights for segmentation: the pretext network's, all but its output head."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rbmnet.errors import RbmnetError
from rbmnet.model.checkpoint import load_checkpoint
from rbmnet.networks import ARCHITECTURES
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


def transferred_tensors(names, transfer: str, architecture: str) -> set[str]:
    """Which of `names` (state or parameter names) come from pretext weights under segmentation.transfer:
    "full" every one but the output head, "encoder" those of the architecture's encoder."""
    if transfer == "encoder":
        prefixes = ARCHITECTURES[architecture].encoder_prefixes
        return {name for name in names if name.startswith(prefixes)}
    return {name for name in names if not name.startswith(HEAD_PREFIX)}


def load_pretrained(network: torch.nn.Module, checkpoint_path: Path, network_config: dict,
                    transfer: str = "full") -> InitialisationReport:
    """Load the transferred tensors (every one but the output head, or the encoder's); any mismatch
    among them is an error naming the shapes, never a partial load."""
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
    architecture = network_config["architecture"]
    wanted = transferred_tensors(target, transfer, architecture)
    kept = transferred_tensors(source, transfer, architecture)
    skipped = {name: "output head is task-specific" if name.startswith(HEAD_PREFIX) else
               "decoder starts fresh (segmentation.transfer encoder)" for name in source if name not in kept}
    body = {name: source[name] for name in kept}
    missing = sorted(n for n in wanted if n not in body)
    unexpected = sorted(n for n in body if n not in target)
    mismatched = [f"{n} {tuple(body[n].shape)} in the checkpoint vs {tuple(target[n].shape)} here"
                  for n in sorted(body) if n in target and body[n].shape != target[n].shape]
    if missing or unexpected or mismatched:
        raise RbmnetError(f"{checkpoint_path}: does not fit this network (missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, shape mismatch {mismatched[:3]})")
    network.load_state_dict(body, strict=False)
    return InitialisationReport(str(checkpoint_path), len(body), skipped)
