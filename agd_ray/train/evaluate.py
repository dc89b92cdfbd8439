"""Evaluation of a split (validation or test) at the end of each epoch: each
worker scores its shard, and the sums are all-reduced."""

from __future__ import annotations

import warnings

import torch

from agd_ray.config import ExperimentConfig
from agd_ray.train.batches import eval_batches
from agd_ray.train.distributed import all_reduce_sum, unwrap
from agd_ray.train.session import Session
from agd_ray.train.step import Parts


@torch.no_grad()
def evaluate(
    cfg: ExperimentConfig, parts: Parts, dataset, session: Session, num_classes: int, split: str
) -> dict[str, float]:
    """``{split}_loss`` and ``{split}_acc`` over the whole split (each worker one shard;
    sums all-reduced); for the test split also top-5 (None with fewer than 5 classes)."""
    device, rank, world = session.device, session.rank, session.world
    net = unwrap(parts.model)  # no DDP forward: shards may differ in size
    net.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)
    batches = eval_batches(
        dataset, rank, world, cfg.train.eval_batch_size, cfg.data.loader_workers, device
    )
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with parts.forward_context():
            out = net(x)
            loss = parts.criterion(out, y)
        sums[0] += loss.float() * y.numel()  # per prediction (language: token)
        sums[1] += (out.argmax(-1) == y).sum()
        if num_classes >= 5:
            sums[2] += (out.topk(5, dim=-1).indices == y[..., None]).any(-1).sum()
        sums[3] += y.numel()
    loss, correct, correct5, n = all_reduce_sum(sums).tolist()
    if n == 0:  # Ray Data's equal split gives no rows to anyone from a split < world
        warnings.warn(f"the {split} split reached no worker: no {split} metrics", stacklevel=2)
        return {f"{split}_loss": None, f"{split}_acc": None}
    metrics = {f"{split}_loss": loss / n, f"{split}_acc": correct / n}
    if split == "test":
        metrics["test_acc5"] = correct5 / n if num_classes >= 5 else None
    return metrics
