"""Data loading that resumes exactly and shards evaluation without duplicates.

The DataModules build ordinary ``DataLoader``s; :func:`install` wraps a data module so that,
inside a trainer, its loaders become:

* training: :class:`ResumableLoader` over a :class:`ShuffleSampler`. The order of epoch ``e`` is
  a permutation drawn from a generator seeded with ``seed + e`` (independent of the global RNG),
  sharded ``rank::world_size`` as ``DistributedSampler`` does. The loader counts the batches it
  has handed out this epoch; ``state_dict()``/``load_state_dict()`` (Lightning saves them in
  every checkpoint) carry ``(seed, epoch, batches)``, so a run resumed mid-epoch skips exactly the
  batches it had trained on and sees the same remaining batches in the same order. The loader
  has its own generator, so creating its iterator draws nothing from the global RNG (which the
  checkpoint restores for dropout).
* validation and test: :class:`EvalShardSampler`, every window exactly once over all ranks
  (``DistributedSampler`` pads the last shard with repeated windows, which would count them
  twice); torchmetrics and ``self.log(..., sync_dist=True)`` reduce sums and counts, so the
  metric over 2 ranks is the metric over the whole split.

Both samplers subclass ``DistributedSampler`` so Lightning keeps them under DDP. A loader that
cannot be rebuilt this way (an ``IterableDataset``, a custom ``batch_sampler``) is left as it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

_LOADER_HOOKS = ("train_dataloader", "val_dataloader", "test_dataloader")


class ShuffleSampler(DistributedSampler):
    """``DistributedSampler`` (seeded per epoch) that can start an epoch past its first ``skip`` indices.

    Args:
        dataset: the map-style dataset.
        num_replicas: number of processes (world size).
        rank: this process's rank.
        shuffle: permute per epoch (training) or keep the order.
        seed: base seed of the per-epoch permutation.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0  # only the epoch being resumed starts late
        return iter(indices[skip:])


class EvalShardSampler(DistributedSampler):
    """Rank ``r`` of ``W`` gets windows ``r, r + W, r + 2W, ...``: every window once, no padding.

    Args:
        dataset: the map-style dataset.
        num_replicas: number of processes (world size).
        rank: this process's rank.
    """

    def __init__(self, dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` whose position within the epoch is part of the checkpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = 0  # batches handed out in the current epoch

    def __iter__(self):
        sampler: ShuffleSampler = self.sampler
        start = sampler.skip // self.batch_size
        self.batches = start
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler: ShuffleSampler = self.sampler
        return {"seed": sampler.seed, "epoch": sampler.epoch, "batches": self.batches,
                "batch_size": self.batch_size, "world_size": sampler.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ShuffleSampler = self.sampler
        if (state.get("world_size"), state.get("batch_size")) != (sampler.num_replicas, self.batch_size):
            warnings.warn(
                f"resuming with {sampler.num_replicas} process(es) x batch {self.batch_size} a checkpoint taken with "
                f"{state.get('world_size')} x {state.get('batch_size')}: the interrupted epoch restarts from its "
                "first batch", stacklevel=2)
            sampler.seed, sampler.epoch, sampler.skip = state["seed"], state["epoch"], 0
            return
        sampler.seed, sampler.epoch = state["seed"], state["epoch"]
        sampler.skip = state["batches"] * self.batch_size


def _rebuildable(loader: Any) -> bool:
    return (isinstance(loader, DataLoader) and not isinstance(loader, ResumableLoader)
            and not isinstance(loader.dataset, IterableDataset) and loader.batch_size is not None)


def _loader_kwargs(loader: DataLoader) -> dict[str, Any]:
    kwargs = dict(batch_size=loader.batch_size, drop_last=loader.drop_last, collate_fn=loader.collate_fn,
                  num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
                  worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers)
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return kwargs


def resumable_train_loader(loader: Any, world_size: int, rank: int, seed: int) -> Any:
    """The training loader rebuilt as a :class:`ResumableLoader` (unchanged when it cannot be)."""
    if not _rebuildable(loader):
        return loader
    shuffle = isinstance(loader.sampler, RandomSampler)
    sampler = ShuffleSampler(loader.dataset, world_size, rank, shuffle=shuffle, seed=seed)
    generator = torch.Generator().manual_seed(seed)  # workers' base seed: never from the global RNG
    return ResumableLoader(loader.dataset, sampler=sampler, generator=generator, **_loader_kwargs(loader))


def sharded_eval_loader(loader: Any, world_size: int, rank: int) -> Any:
    """An evaluation loader whose rank gets every ``world_size``-th window (unchanged on one process)."""
    if world_size <= 1 or not _rebuildable(loader):
        return loader
    sampler = EvalShardSampler(loader.dataset, world_size, rank)
    return DataLoader(loader.dataset, sampler=sampler, **_loader_kwargs(loader))


def install(datamodule: Any, trainer: Any, seed: int) -> None:
    """Make ``datamodule``'s loaders resumable (train) and duplicate-free under DDP (val/test).

    The data module's own ``*_dataloader`` methods still build the loaders; they are wrapped on
    this instance only, and ask the trainer for the world size and rank when Lightning calls them.
    """
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if getattr(datamodule, "_seqzoo_loaders_installed", False):
        return
    for hook in _LOADER_HOOKS:
        if not is_overridden(hook, datamodule, LightningDataModule):
            continue  # a split the module does not have stays absent
        original = getattr(datamodule, hook)

        def wrapped(original=original, hook=hook):
            loader = original()
            # sharded only inside a running multi-process trainer (a baseline computed beside it
            # sees the whole split)
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            world, rank = (trainer.world_size, trainer.global_rank) if distributed else (1, 0)
            if hook == "train_dataloader":
                return resumable_train_loader(loader, world, rank, seed)
            return sharded_eval_loader(loader, world, rank)

        setattr(datamodule, hook, wrapped)
    datamodule._seqzoo_loaders_installed = True
