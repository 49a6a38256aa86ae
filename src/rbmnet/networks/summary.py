"""Parameter counts of a network, in total and per top-level part (encoder, decoder, head, ...)."""
from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_summary(model: nn.Module) -> str:
    """A few lines: the total and trainable counts, then one line per top-level child."""
    total = count_parameters(model)
    lines = [f"{type(model).__name__}: {total} parameters ({total / 1e6:.2f} M), "
             f"{count_parameters(model, trainable_only=True)} trainable"]
    for name, child in model.named_children():
        lines.append(f"  {name:<12} {type(child).__name__:<20} {count_parameters(child):>12}")
    return "\n".join(lines)
