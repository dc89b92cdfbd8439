"""Global batches: every worker the same number of steps, slices partition the batch."""

from agd_ray.train.batches import GlobalBatchSampler, shard_indices


def test_workers_split_each_global_batch():
    n, B = 103, 20
    one = list(GlobalBatchSampler(n, B, 0, 1, seed=3))
    parts = [list(GlobalBatchSampler(n, B, r, 2, seed=3)) for r in range(2)]
    assert len(one) == len(parts[0]) == len(parts[1]) == n // B
    for i, batch in enumerate(one):
        assert parts[0][i] + parts[1][i] == batch
        assert len(parts[0][i]) == B // 2


def test_epochs_reshuffle_deterministically():
    s = GlobalBatchSampler(50, 10, 0, 1, seed=0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0
    assert e0 != e1
    assert sorted(i for b in e0 for i in b) == list(range(50))


def test_batch_larger_than_dataset_is_one_batch():
    batches = list(GlobalBatchSampler(7, 64, 0, 2, seed=0))
    assert len(batches) == 1 and len(batches[0]) == 3


def test_eval_shards_cover_the_set_once():
    shards = [shard_indices(10, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))
