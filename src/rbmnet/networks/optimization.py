"""Optimiser from the plan's stage config: an explicit dict of names, no import scanning."""
from __future__ import annotations

import torch

from rbmnet.errors import RbmnetError

OPTIMIZERS = {
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
    "adamw": lambda params, cfg: torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay),
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.learning_rate, momentum=0.99, nesterov=True,
                                              weight_decay=cfg.weight_decay),
}


def build_optimizer(network: torch.nn.Module, stage_config) -> torch.optim.Optimizer:
    try:
        factory = OPTIMIZERS[stage_config.optimizer]
    except KeyError:
        raise RbmnetError(f"unknown optimizer '{stage_config.optimizer}' (known: {', '.join(OPTIMIZERS)})") from None
    return factory(network.parameters(), stage_config)
