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


def build_optimizer(network: torch.nn.Module, stage_config) -> torch.optim.Optimizer:
    try:
        factory = OPTIMIZERS[stage_config.optimizer]
    except KeyError:
        raise RbmnetError(f"unknown optimizer '{stage_config.optimizer}' (known: {', '.join(OPTIMIZERS)})") from None
    return factory(network.parameters(), stage_config)


def set_learning_rate(optimizer: torch.optim.Optimizer, base_lr: float, schedule: str, epoch: int,
                      epochs: int) -> None:
    try:
        factor = LR_SCHEDULES[schedule](epoch, epochs)
    except KeyError:
        raise RbmnetError(f"unknown lr_schedule '{schedule}' (known: {', '.join(LR_SCHEDULES)})") from None
    for group in optimizer.param_groups:
        group["lr"] = base_lr * factor
