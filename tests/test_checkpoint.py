"""A checkpoint restores model, optimizer and state, and gives each rank back its own
RNG streams and noise-scale averages (the end-to-end test with a killed Train worker
is tests/test_worker_failure_ray.py)."""

import random

import numpy as np
import torch

from agd_ray.models import FCN
from agd_ray.optim import AGD
from agd_ray.train.checkpoint import TrainState, load_checkpoint, save_checkpoint, worker_state
from agd_ray.train.noise import NoiseScale


def _noise(seed: int) -> NoiseScale:
    noise = NoiseScale()
    g = torch.Generator().manual_seed(seed)
    for _ in range(3):
        noise.update(torch.rand((), generator=g) + 1, torch.rand((), generator=g), 8, 16)
    return noise


def test_each_rank_gets_its_own_rng_and_noise_state(tmp_path):
    model = FCN(2, 16, 40, 10)
    opt = AGD(model.parameters())
    workers = []
    for rank in range(2):  # as if gathered from two workers with different streams
        torch.manual_seed(rank), np.random.seed(rank), random.seed(rank)
        workers.append(worker_state(_noise(rank)))
    path = tmp_path / "state.pt"
    save_checkpoint(path, TrainState(epoch=3, step=30), model, opt, None, workers)

    noise = NoiseScale()
    restored = FCN(2, 16, 40, 10)
    state = load_checkpoint(path, restored, AGD(restored.parameters()), None, noise, rank=1)
    draws = torch.rand(3), np.random.rand(3), random.random()

    assert (state.epoch, state.step) == (3, 30)
    weights = restored.state_dict()
    assert all(torch.equal(w, weights[k]) for k, w in model.state_dict().items())
    assert noise.steps == 3 and noise.value() == _noise(1).value()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)  # rank 1's streams
    assert torch.equal(draws[0], torch.rand(3))
    assert (draws[1] == np.random.rand(3)).all() and draws[2] == random.random()
