"""A sampler whose order is a pure function of (seed, epoch), so a run resumed mid-epoch
draws exactly the rows the killed run had left: nothing depends on the global RNG."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def epoch_order(
    size: int, seed: int, epoch: int, shuffle: bool, groups: np.ndarray | None = None
) -> list[int]:
    """The row order of one epoch: ``range(size)``, or a permutation seeded by ``seed + epoch``.

    With ``groups`` (a group id per row) the rows of a group come together: the groups in a
    random order, the rows of each in a random order.
    """
    if not shuffle:
        return list(range(size))
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(size, generator=generator).numpy()
    if groups is None or not size:
        return order.tolist()
    group_rank = torch.randperm(int(groups.max()) + 1, generator=generator).numpy()
    return order[np.argsort(group_rank[groups[order]], kind="stable")].tolist()


class ResumableSampler(Sampler[int]):
    """Row indices of a map-style dataset for one rank, as torch's DistributedSampler deals
    them: the epoch's order, padded by repeating its start to a multiple of ``world_size``
    (or cut down to one with ``drop_last``); rank ``r`` takes ``order[r::world_size]``.

    To resume mid-epoch call ``set_epoch(epoch)`` and then ``set_start(k)``: the first ``k``
    of this rank's indices are skipped. ``groups`` keeps rows of a group together
    (``epoch_order``); dealt out by turns, a group's rows stay together on every rank.

    >>> list(ResumableSampler(5, shuffle=False, seed=0, rank=1, world_size=2))
    [1, 3, 0]
    """

    def __init__(
        self,
        size: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        groups: np.ndarray | None = None,
    ) -> None:
        if size < 0 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need size >= 0 and 0 <= rank < world_size (got {size=}, {rank=}, {world_size=})"
            )
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.groups = groups
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        """Deal ``epoch``'s order next, from its first index."""
        self.epoch = epoch
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` of this rank's indices in the current epoch."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"start must be in [0, {self.per_rank}] (got {start})")
        self.start = start

    @property
    def per_rank(self) -> int:
        """How many indices each rank gets in a whole epoch."""
        if self.drop_last:
            return self.size // self.world_size
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.size, self.seed, self.epoch, self.shuffle, self.groups)
        total = self.per_rank * self.world_size
        padded = itertools.islice(itertools.cycle(order), total)  # repeats the start
        mine = itertools.islice(padded, self.rank, None, self.world_size)
        return itertools.islice(mine, self.start, None)

    def __len__(self) -> int:
        return self.per_rank - self.start
