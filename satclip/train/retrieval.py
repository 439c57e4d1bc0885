"""Validation retrieval: image -> location ranking metrics over a set, each next to its chance level."""

from __future__ import annotations

import torch

from ..geo import great_circle_km


@torch.no_grad()
def retrieval_metrics(image: torch.Tensor, location: torch.Tensor, *, lonlat: torch.Tensor, chunk: int = 1024) -> dict[str, float]:
    """Image -> location retrieval over a set: for each image, rank all locations by cosine
    similarity. Returns top-1 / top-5 accuracy (the true location among the first k) and the median
    great-circle distance (km) between each image's top-1 location and its true one, each next to
    its chance level (``*_chance``: a ranking at random; the median distance between each point and
    a random one of the set, from a fixed sample of up to 100,000 pairs)."""
    n = image.shape[0]
    k = min(5, n)
    hits1 = hits5 = 0
    errors = []
    for start in range(0, n, chunk):
        sims = image[start : start + chunk].float() @ location.float().T
        top = sims.topk(k, dim=1).indices
        truth = torch.arange(start, start + len(top), device=top.device)
        hits1 += int((top[:, 0] == truth).sum())
        hits5 += int((top == truth[:, None]).any(dim=1).sum())
        errors.append(great_circle_km(lonlat[top[:, 0]].double(), lonlat[truth].double()))
    generator = torch.Generator().manual_seed(0)
    pairs = min(100_000, n * n)
    first, second = torch.randint(n, (pairs,), generator=generator), torch.randint(n, (pairs,), generator=generator)
    points = lonlat.double().cpu()
    chance_km = float(great_circle_km(points[first], points[second]).median())
    return {
        "top1": hits1 / n,
        "top5": hits5 / n,
        "median_km": float(torch.cat(errors).median()),
        "top1_chance": 1 / n,
        "top5_chance": k / n,
        "median_km_chance": chance_km,
    }


__all__ = ["retrieval_metrics"]
