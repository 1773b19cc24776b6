"""Evaluation under DDP counts every sample exactly once, in every domain: the loaders that
``seqzoo.resumable_data.install`` gives each rank (``sharded_eval_loader``) split every
validation and test split into disjoint shards that together cover it, with no padding."""

from __future__ import annotations

import pytest

from seqzoo.resumable_data import EvalShardSampler, sharded_eval_loader
from tests.domains.conftest import DOMAINS


def _samples_in(batch) -> int:
    if hasattr(batch, "num_graphs"):  # a PyG Batch
        return int(batch.num_graphs)
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(first.shape[0])


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_eval_shards_cover_every_sample_once(domain, world, domain_data):
    _, dm = domain_data(domain)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    for split in ("val", "test"):
        loader = getattr(dm, f"{split}_dataloader")()
        n = len(loader.dataset)
        shards = [sharded_eval_loader(loader, world, rank) for rank in range(world)]
        assert all(s is not loader for s in shards), f"{domain} {split}: loader cannot be sharded"
        indices = [list(s.sampler) for s in shards]
        assert all(isinstance(s.sampler, EvalShardSampler) for s in shards)
        flat = sorted(i for shard in indices for i in shard)
        assert flat == list(range(n)), f"{domain} {split}: shards do not cover the {n} samples exactly once"
        # the batches the ranks evaluate hold exactly those samples
        if n <= 64:
            counted = sum(_samples_in(batch) for s in shards for batch in s)
            assert counted == n
        assert sharded_eval_loader(loader, 1, 0) is loader  # one process: unchanged
