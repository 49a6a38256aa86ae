"""How a network is optimised, by name: the plan's `optimizer` and `lr_schedule` choices as explicit dicts,
so the plan validation and the training loop read the same names."""
from __future__ import annotations

import torch

from rbmnet.errors import RbmnetError

OPTIMIZERS = {
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
    "adamw": lambda params, cfg: torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.learning_rate, momentum=0.99, nesterov=True,
                                              weight_decay=cfg.weight_decay),
}

# name -> (epoch, epochs) -> factor on the stage's learning rate, per epoch
LR_SCHEDULES = {
    "constant": lambda epoch, epochs: 1.0,
    "poly": lambda epoch, epochs: (1 - epoch / epochs) ** 0.9,  # nnU-Net's polynomial decay
}


# what a segmentation network takes over from pretext weights (segmentation.transfer); the architecture
# says which tensors are its encoder (networks/__init__.py ARCHITECTURES)
TRANSFERS = ("full", "encoder")


def build_optimizer(network: torch.nn.Module, stage_config, transferred: set[str] | None = None,
                    transferred_lr_factor: float = 1.0) -> torch.optim.Optimizer:
    """One parameter group, or two when transferred tensors train at their own rate: the group's
    `lr_factor` scales whatever learning rate `set_learning_rate` sets."""
    try:
        factory = OPTIMIZERS[stage_config.optimizer]
    except KeyError:
        raise RbmnetError(f"unknown optimizer '{stage_config.optimizer}' (known: {', '.join(OPTIMIZERS)})") from None
    if not transferred or transferred_lr_factor == 1.0:
        return factory(network.parameters(), stage_config)
    named = list(network.named_parameters())
    groups = [{"params": [p for n, p in named if n in transferred], "lr_factor": transferred_lr_factor},
              {"params": [p for n, p in named if n not in transferred], "lr_factor": 1.0}]
    return factory([group for group in groups if group["params"]], stage_config)


def learning_rate_factor(schedule: str, epoch: int, epochs: int, warmup_epochs: int = 0) -> float:
    """Linear warm-up over the first `warmup_epochs` (1/(w+1), 2/(w+1), ...), then the schedule over the rest."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    try:
        return LR_SCHEDULES[schedule](epoch - warmup_epochs, epochs - warmup_epochs)
    except KeyError:
        raise RbmnetError(f"unknown lr_schedule '{schedule}' (known: {', '.join(LR_SCHEDULES)})") from None


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, schedule: str, epoch: int,
                      epochs: int, warmup_epochs: int = 0) -> None:
    factor = learning_rate_factor(schedule, epoch, epochs, warmup_epochs)
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor * group.get("lr_factor", 1.0)
