"""Deterministic data order and augmentation, so a resumed run replays the uninterrupted one.

The order of epoch ``e`` is a permutation drawn from ``seed + e``; global batch ``b`` is split between ranks by
position, so the global batches do not depend on the number of processes. Each sample's augmentation draws
from generators seeded by ``(seed, epoch, index)``, in the main process or in a worker alike. The sampler hands out
``(epoch, index)`` keys, so DataLoader workers that persist across epochs (holding their own copy of the dataset)
still know the epoch.
"""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class SeededDataset(Dataset):
    """Wrap a dataset so item ``i`` of epoch ``e`` is augmented identically whenever it is loaded.

    A key is ``(epoch, index)`` (what :class:`EpochBatchSampler` yields) or a plain index of epoch ``self.epoch``.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        item_seed = (self.seed * 1_000_003 + epoch * 10_007 + index) % 2**31
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(item_seed)
            np.random.seed(item_seed)
            torch.manual_seed(item_seed)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class EpochBatchSampler(Sampler):
    """Yields this rank's ``(epoch, index)`` lists for the global batches of one epoch, from batch ``start`` on."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, shuffle: bool = True):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} processes")
        if n < global_batch:
            raise ValueError(f"{n} training samples are fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = self.global_batch // self.world
        for b in range(self.start, self.batches_per_epoch):
            batch = order[b * self.global_batch:(b + 1) * self.global_batch]
            yield [(self.epoch, i) for i in batch[self.rank * per_rank:(self.rank + 1) * per_rank]]
