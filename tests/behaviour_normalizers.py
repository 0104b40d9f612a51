"""Behaviour of a score normalizer: built with no engine values, it maps random (T,) scores with their enroll/test
sides and a cohort to finite (T,) scores; ``none`` returns the scores unchanged."""

from __future__ import annotations

from vvframe.core import registry


def behaves(name: str, factory) -> None:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    files = F.normalize(torch.randn(12, 16, generator=g), dim=1)
    cohort = F.normalize(torch.randn(9, 16, generator=g), dim=1)
    e_idx = torch.randint(0, 6, (40,), generator=g)
    t_idx = torch.randint(0, 6, (40,), generator=g)
    enroll, test = (files[:6], e_idx), (files[6:], t_idx)
    scores = (enroll[0][e_idx] * test[0][t_idx]).sum(1)

    norm = registry.build("normalizers", {"name": name})
    out = norm(scores, enroll, test, cohort)
    assert isinstance(out, torch.Tensor) and out.shape == scores.shape, (name, getattr(out, "shape", out))
    assert torch.isfinite(out).all(), name
    if name == "none":
        assert torch.equal(out, scores)
