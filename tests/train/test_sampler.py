"""ResumableSampler: an order fixed by (seed, epoch), dealt to ranks, resumable mid-epoch."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch

from polymodal.train.sampler import ResumableSampler, epoch_order


def test_the_order_depends_only_on_seed_and_epoch():
    first = epoch_order(50, seed=7, epoch=3, shuffle=True)
    torch.manual_seed(123)  # the global RNGs play no part
    random.seed(123)
    assert epoch_order(50, seed=7, epoch=3, shuffle=True) == first
    assert sorted(first) == list(range(50))
    assert epoch_order(50, seed=7, epoch=4, shuffle=True) != first
    assert epoch_order(50, seed=8, epoch=3, shuffle=True) != first


def test_set_epoch_changes_the_order():
    sampler = ResumableSampler(30, shuffle=True, seed=1)
    sampler.set_epoch(0)
    zero = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != zero
    sampler.set_epoch(0)
    assert list(sampler) == zero == epoch_order(30, seed=1, epoch=0, shuffle=True)


def test_unshuffled_on_one_rank_is_range():
    sampler = ResumableSampler(9, shuffle=False, seed=5)
    assert list(sampler) == list(range(9)) and len(sampler) == 9


@pytest.mark.parametrize("size", [12, 13, 2])
def test_ranks_deal_the_padded_order(size):
    world = 4
    order = epoch_order(size, seed=3, epoch=2, shuffle=True)
    padded = (order * world)[: -(-size // world) * world]
    ranks = []
    for rank in range(world):
        sampler = ResumableSampler(size, shuffle=True, seed=3, rank=rank, world_size=world)
        sampler.set_epoch(2)
        ranks.append(list(sampler))
        assert len(sampler) == len(ranks[-1]) == len(padded) // world
    dealt = [ranks[i % world][i // world] for i in range(len(padded))]
    assert dealt == padded  # rank r holds padded[r::world]: together exactly the order
    if size % world == 0:
        assert sorted(itertools.chain(*ranks)) == list(range(size))  # no row twice


def test_drop_last_cuts_the_order_to_a_multiple():
    order = epoch_order(10, seed=0, epoch=0, shuffle=True)
    ranks = [
        list(ResumableSampler(10, shuffle=True, seed=0, rank=r, world_size=4, drop_last=True))
        for r in range(4)
    ]
    assert all(len(r) == 2 for r in ranks)
    assert sorted(itertools.chain(*ranks)) == sorted(order[:8])


def test_set_start_yields_the_tail_until_the_next_epoch():
    sampler = ResumableSampler(11, shuffle=True, seed=4, rank=1, world_size=2)
    sampler.set_epoch(5)
    whole = list(sampler)
    sampler.set_start(4)
    assert list(sampler) == whole[4:] and len(sampler) == len(whole) - 4
    sampler.set_start(len(whole))
    assert list(sampler) == [] and len(sampler) == 0
    sampler.set_epoch(6)
    assert len(list(sampler)) == len(whole) == len(sampler)
    with pytest.raises(ValueError):
        sampler.set_start(len(whole) + 1)


def test_groups_come_together_in_a_seeded_random_order():
    groups = np.array([i % 7 for i in range(50)])  # 7 groups of 7 or 8 rows, interleaved
    order = epoch_order(50, seed=3, epoch=1, shuffle=True, groups=groups)
    assert sorted(order) == list(range(50))
    seen = [int(groups[i]) for i in order]
    runs = [key for key, _ in itertools.groupby(seen)]
    assert len(runs) == 7  # each group in one run
    assert order == epoch_order(50, seed=3, epoch=1, shuffle=True, groups=groups)
    assert runs != [
        key
        for key, _ in itertools.groupby(
            int(groups[i]) for i in epoch_order(50, seed=3, epoch=2, shuffle=True, groups=groups)
        )
    ]


def test_without_groups_the_order_is_unchanged():
    assert (
        epoch_order(20, 1, 2, True, None)
        == torch.randperm(20, generator=torch.Generator().manual_seed(3)).tolist()
    )


def test_ranks_share_a_groups_rows():
    groups = np.repeat(np.arange(10), 4)  # 10 groups of 4 rows
    ranks = [
        list(ResumableSampler(40, shuffle=True, seed=0, rank=r, world_size=2, groups=groups))
        for r in range(2)
    ]
    assert sorted(ranks[0] + ranks[1]) == list(range(40))
    for mine in ranks:  # each rank meets the groups in one order, two rows of each at a time
        assert [key for key, _ in itertools.groupby(int(groups[i]) for i in mine)] == [
            key for key, _ in itertools.groupby(int(groups[i]) for i in ranks[0])
        ]
