"""Training: the per-worker loop (``loop``) and the TorchTrainer driver (``trainer``)."""

from agd_ray.train.loop import train_loop_per_worker

__all__ = ["train_loop_per_worker"]
