"""``softmax``: a linear classifier over the speakers trained with cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import ClassHead


class Softmax(ClassHead):
    """Softmax: a linear classifier (with bias) over the training speakers and cross-entropy (the plain baseline).

    ``weight (num_classes, D)`` and ``bias (num_classes,)`` are initialised as ``nn.Linear`` does. Every utterance of
    the batch is classified (``(B, P, D)`` is flattened, labels repeated), so any ``P >= 1`` works. Accuracy: top-1
    fraction in [0, 1]. ``resize_classes(num_classes, keep=None)`` rebuilds the head for another label set.
    """

    loss_name = "softmax"

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.init_head(embed_dim, num_classes, bias=True)

    def fresh_rows(self, num_classes: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        weight = torch.empty(num_classes, self.embed_dim, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        bound = 1.0 / math.sqrt(self.embed_dim)
        bias = torch.empty(num_classes, device=device, dtype=dtype).uniform_(-bound, bound)
        return {"weight": weight, "bias": bias}

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.float(), self.bias.float())
