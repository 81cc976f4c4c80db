"""Low-rank adapters (LoRA, Hu et al. 2021) on a model's nn.Linear layers.

An adapted layer computes W x + b + (alpha / rank) * B A x with W and b frozen, A (rank x in) random
and B (out x rank) zero, so training starts from exactly the model it was given and learns only
rank * (in + out) numbers per layer. `merge_adapters` folds B A back into W, so what is saved and
exported afterwards is the plain model, with the same graphs and the same size as before.
"""

from __future__ import annotations

import math
from typing import Callable, List

import torch
from torch import nn


class LowRankLinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (see the module's docstring)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"the adapters' rank must be 1 or more, got {rank}")
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.down = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype))
        self.up = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # nn.Linear's own init
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.down.t() @ self.up.t()) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight."""
        with torch.no_grad():
            self.base.weight += self.scale * (self.up @ self.down)
        return self.base


def add_adapters(
    root: nn.Module, wanted: Callable[[str], bool], rank: int, alpha: float
) -> List[nn.Parameter]:
    """Wrap every nn.Linear under `root` whose dotted name `wanted` accepts; the new parameters."""
    chosen = [
        (name, module)
        for name, module in root.named_modules()
        if isinstance(module, nn.Linear) and wanted(name)
    ]
    if not chosen:
        raise ValueError("no linear layer matched: nothing to adapt")
    parameters: List[nn.Parameter] = []
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        adapted = LowRankLinear(module, rank, alpha)
        setattr(root.get_submodule(parent_name) if parent_name else root, child, adapted)
        parameters += [adapted.down, adapted.up]
    return parameters


def merge_adapters(root: nn.Module) -> int:
    """Replace every LowRankLinear under `root` by its merged nn.Linear; how many there were."""
    adapted = [(name, m) for name, m in root.named_modules() if isinstance(m, LowRankLinear)]
    for name, module in adapted:
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, child, module.merged())
    return len(adapted)
