"""Retrieval ranks and mAP against hand-computed values and slow loop-based references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.metrics import retrieval
from polymodal.metrics.retrieval import retrieval_scores


def summary(
    ranks: list[int], ks: tuple[int, ...], mean_ap: float | None = None
) -> dict[str, float]:
    """Expected R@K, median and mean for a list of ranks, and mAP (by default that of queries
    with one relevant item each, whose AP is 1 / rank)."""
    expected = {f"R@{k}": sum(r <= k for r in ranks) / len(ranks) for k in ks}
    expected["median_rank"] = float(np.median(ranks))
    expected["mean_rank"] = sum(ranks) / len(ranks)
    expected["mAP"] = sum(1 / r for r in ranks) / len(ranks) if mean_ap is None else mean_ap
    return expected


def ahead_of(scores: list[float], j: int, ties: str) -> list[int]:
    """Items ranked ahead of item j: higher scores, and tied ones as the tie rule says."""
    tied_ahead = {"stable": lambda i: i < j, "optimistic": lambda i: False}.get(
        ties, lambda i: True
    )
    return [
        i
        for i, score in enumerate(scores)
        if i != j and (score > scores[j] or (score == scores[j] and tied_ahead(i)))
    ]


def reference_map(similarity: list[list[float]], relevance: list[list[bool]], ties: str) -> float:
    """mAP straight from the definition: per relevant item, (relevant ahead + 1) / (ahead + 1)."""
    average_precisions = []
    for scores, relevant in zip(similarity, relevance, strict=True):
        precisions = []
        for j, is_relevant in enumerate(relevant):
            if is_relevant:
                ahead = ahead_of(scores, j, ties)
                precisions.append((sum(relevant[i] for i in ahead) + 1) / (len(ahead) + 1))
        average_precisions.append(sum(precisions) / len(precisions))
    return sum(average_precisions) / len(average_precisions)


def reference_ranks(
    similarity: list[list[float]], relevance: list[list[bool]], ties: str
) -> list[int]:
    """Rank of each row's best-ranked relevant column, straight from the definition."""
    ranks = []
    for scores, relevant in zip(similarity, relevance, strict=True):
        best = len(scores) + 1
        for j, is_relevant in enumerate(relevant):
            if not is_relevant:
                continue
            higher = sum(s > scores[j] for s in scores)
            equal_before = sum(s == scores[j] for s in scores[:j])
            equal_after = sum(s == scores[j] for s in scores[j + 1 :])
            tied_ahead = {"stable": equal_before, "optimistic": 0}.get(
                ties, equal_before + equal_after
            )
            best = min(best, higher + tied_ahead + 1)
        ranks.append(best)
    return ranks


def test_three_by_three_one_to_one() -> None:
    # image->text (rows, relevant = diagonal): row 0: 0.9 is the top -> 1;
    # row 1: 0.8 > 0.7 -> 2; row 2: 0.5 and 0.6 > 0.4 -> 3. Ranks [1, 2, 3].
    # text->image (columns): col 0: 0.9 top -> 1; col 1: 0.7 top -> 1; col 2: 0.5 > 0.4 -> 2.
    # One relevant item per query, so AP = 1 / rank: mAP (1 + 1/2 + 1/3) / 3 = 11/18 and
    # (1 + 1 + 1/2) / 3 = 5/6.
    similarity = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.7, 0.2], [0.5, 0.6, 0.4]])
    scores = retrieval_scores(similarity, ks=(1, 2, 5))
    assert scores["image_to_text"] == pytest.approx(
        {
            "R@1": 1 / 3,
            "R@2": 2 / 3,
            "R@5": 1.0,
            "median_rank": 2.0,
            "mean_rank": 2.0,
            "mAP": 11 / 18,
        }
    )
    assert scores["text_to_image"] == pytest.approx(
        {"R@1": 2 / 3, "R@2": 1.0, "R@5": 1.0, "median_rank": 1.0, "mean_rank": 4 / 3, "mAP": 5 / 6}
    )
    assert scores["gallery_size"] == {"images": 3, "texts": 3}
    identity = retrieval_scores(similarity.numpy(), relevance=np.eye(3, dtype=bool), ks=(1, 2, 5))
    assert identity == scores
    default_keys = {"R@1", "R@5", "R@10", "median_rank", "mean_rank", "mAP"}
    assert set(retrieval_scores(similarity.tolist())["image_to_text"]) == default_keys


@pytest.mark.parametrize(
    ("ties", "ranks"),
    [("stable", [1, 2, 3]), ("optimistic", [1, 1, 1]), ("pessimistic", [3, 3, 3])],
)
def test_all_tied(ties: str, ranks: list[int]) -> None:
    # Every score equal: query i has i tied items before it and 2 - i after it.
    # stable -> i + 1; optimistic -> 1; pessimistic -> 3, in both directions.
    scores = retrieval_scores(torch.ones(3, 3), ks=(1, 2), ties=ties)
    assert scores["image_to_text"] == pytest.approx(summary(ranks, (1, 2)))
    assert scores["text_to_image"] == pytest.approx(summary(ranks, (1, 2)))


@pytest.mark.parametrize("sort_above", [0, retrieval.SORT_ABOVE])
@pytest.mark.parametrize(
    ("ties", "image_ranks", "image_map", "text_ranks"),
    [
        ("stable", [2, 3], 11 / 24, [2, 2, 1, 2]),
        ("optimistic", [2, 3], 11 / 24, [2, 2, 1, 2]),
        ("pessimistic", [3, 3], 5 / 12, [2, 2, 2, 2]),
    ],
)
def test_multi_relevant_two_by_four(
    ties: str,
    image_ranks: list[int],
    image_map: float,
    text_ranks: list[int],
    sort_above: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # image 0: relevant texts 0 (0.2) and 2 (0.4); best 0.4, beaten by 0.9, tied with text 3
    #   which comes later -> stable 2, optimistic 2, pessimistic 3.
    # image 1: relevant texts 1 (0.1) and 3 (0.3); best 0.3, beaten by 0.8 and 0.4 -> 3.
    # text 0: [0.2, 0.8], relevant image 0 -> 2.  text 1: [0.9, 0.1], relevant image 1 -> 2.
    # text 2: [0.4, 0.4], relevant image 0, tied with the later image 1 -> 1, 1, pessimistic 2.
    # text 3: [0.4, 0.3], relevant image 1 -> 2.
    # AP, each relevant item scoring (relevant ahead + 1) / (items ahead + 1):
    # image 0: text 2 has 0.9 ahead (stable, optimistic: 1/2) or 0.9 and the tied text 3
    #   (pessimistic: 1/3); text 0 has three ahead, one relevant -> 2/4.
    #   AP 1/2 (stable, optimistic), 5/12 (pessimistic).
    # image 1 (no ties): text 3 -> 1/3, text 1 -> 2/4; AP 5/12.
    # mAP: (1/2 + 5/12) / 2 = 11/24, or 5/12. Texts have one relevant image: AP = 1 / rank.
    monkeypatch.setattr(retrieval, "SORT_ABOVE", sort_above)  # 0: AP from sorted rows
    similarity = [[0.2, 0.9, 0.4, 0.4], [0.8, 0.1, 0.4, 0.3]]
    relevance = [[True, False, True, False], [False, True, False, True]]
    scores = retrieval_scores(similarity, relevance, ks=(1, 2, 5), ties=ties)
    assert scores["image_to_text"] == pytest.approx(summary(image_ranks, (1, 2, 5), image_map))
    assert scores["text_to_image"] == pytest.approx(summary(text_ranks, (1, 2, 5)))
    assert scores["gallery_size"] == {"images": 2, "texts": 4}


@pytest.mark.parametrize("sort_above", [0, retrieval.SORT_ABOVE])
@pytest.mark.parametrize(
    ("ties", "image_ranks", "image_map"),
    [
        ("stable", [3, 1], 37 / 60),
        ("optimistic", [2, 1], 23 / 30),
        ("pessimistic", [4, 5], 17 / 30),
    ],
)
def test_relevant_items_tied_with_each_other(
    ties: str,
    image_ranks: list[int],
    image_map: float,
    sort_above: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # image 0: relevant texts 1, 3 (both 0.7) and 4 (0.1). 0.9 is higher; the earliest relevant
    #   0.7 is text 1, after the irrelevant 0.7 of text 0 -> stable 3, optimistic 2,
    #   pessimistic 1 + 3 (texts 0, 1, 3 at 0.7) = 4.
    # image 1: all five texts at 0.3, relevant 0, 2, 4 -> stable 1 (text 0), optimistic 1,
    #   pessimistic 5. Every text has one image scored higher or is its top -> [2, 1, 2, 1, 1].
    # AP of image 0 (relevant ahead + 1) / (items ahead + 1):
    #   stable: text 1 behind texts 2, 0 -> 1/3; text 3 behind 2, 0, 1 -> 2/4; text 4 -> 3/5;
    #     AP (1/3 + 1/2 + 3/5) / 3 = 43/90.
    #   optimistic: texts 1 and 3 behind text 2 only -> 1/2 each; text 4 -> 3/5; AP 8/15.
    #   pessimistic: texts 1 and 3 behind 2, 0 and each other -> 2/4 each; AP 8/15 (sklearn's).
    # AP of image 1 (all tied): stable 1, 2/3, 3/5 -> 34/45; optimistic 1; pessimistic 3/5.
    # mAP: (43/90 + 34/45) / 2 = 37/60; (8/15 + 1) / 2 = 23/30; (8/15 + 3/5) / 2 = 17/30.
    # Texts: 0-3 have one relevant image (AP 1 / rank); text 4 has both, image 1 (0.3) first
    # and image 0 (0.1) second -> AP 1. mAP (1/2 + 1 + 1/2 + 1 + 1) / 5 = 4/5.
    monkeypatch.setattr(retrieval, "SORT_ABOVE", sort_above)
    similarity = [[0.7, 0.7, 0.9, 0.7, 0.1], [0.3, 0.3, 0.3, 0.3, 0.3]]
    relevance = [[False, True, False, True, True], [True, False, True, False, True]]
    scores = retrieval_scores(similarity, relevance, ks=(1, 2), ties=ties)
    assert scores["image_to_text"] == pytest.approx(summary(image_ranks, (1, 2), image_map))
    assert scores["text_to_image"] == pytest.approx(summary([2, 1, 2, 1, 1], (1, 2), 4 / 5))


@pytest.mark.parametrize("ties", ["stable", "optimistic", "pessimistic"])
@pytest.mark.parametrize("chunk_elements", [5, 1 << 22])
@pytest.mark.parametrize("sort_above", [0, retrieval.SORT_ABOVE])
def test_random_against_reference(
    ties: str, chunk_elements: int, sort_above: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retrieval, "CHUNK_ELEMENTS", chunk_elements)  # 5: one row per chunk
    monkeypatch.setattr(retrieval, "SORT_ABOVE", sort_above)  # 0: AP from sorted rows
    generator = torch.Generator().manual_seed(0)
    for n_images, n_texts in ((7, 7), (6, 11), (9, 4)):
        # Scores from {0, 1, 2, 3} so that ties are common.
        similarity = torch.randint(0, 4, (n_images, n_texts), generator=generator).float()
        relevance = torch.rand(n_images, n_texts, generator=generator) < 0.3
        relevance[torch.arange(n_texts) % n_images, torch.arange(n_texts)] = True
        relevance[torch.arange(n_images), torch.arange(n_images) % n_texts] = True
        ks = tuple(range(1, max(n_images, n_texts) + 1))  # every K: the whole rank distribution
        sim, rel = similarity.tolist(), relevance.tolist()
        sim_t, rel_t = similarity.T.tolist(), relevance.T.tolist()
        scores = retrieval_scores(similarity, relevance, ks=ks, ties=ties)
        expected = summary(reference_ranks(sim, rel, ties), ks, reference_map(sim, rel, ties))
        assert scores["image_to_text"] == pytest.approx(expected)
        expected = summary(
            reference_ranks(sim_t, rel_t, ties), ks, reference_map(sim_t, rel_t, ties)
        )
        assert scores["text_to_image"] == pytest.approx(expected)
        if n_images == n_texts:
            identity = torch.eye(n_images, dtype=torch.bool).tolist()
            one_to_one = retrieval_scores(similarity, ks=ks, ties=ties)
            assert one_to_one["image_to_text"] == pytest.approx(
                summary(reference_ranks(sim, identity, ties), ks)
            )
            assert one_to_one["text_to_image"] == pytest.approx(
                summary(reference_ranks(sim_t, identity, ties), ks)
            )


@pytest.mark.parametrize("sort_above", [0, retrieval.SORT_ABOVE])
def test_map_with_several_relevant_items(sort_above: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # image 0 ranks its texts 0..4 in order; relevant 0, 2, 4 come 1st, 3rd and 5th:
    #   AP (1/1 + 2/3 + 3/5) / 3 = 34/45.
    # image 1 ranks texts 1, 2, 3, 4, 0; relevant 1 and 3 come 1st and 3rd: AP (1 + 2/3) / 2 = 5/6.
    # mAP (34/45 + 5/6) / 2 = 143/180. Each text has one relevant image, at rank
    # [1, 1, 2, 1, 1] (text 2: 0.8 for image 1 beats 0.7) -> mAP (4 + 1/2) / 5 = 9/10.
    monkeypatch.setattr(retrieval, "SORT_ABOVE", sort_above)
    similarity = [[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.9, 0.8, 0.7, 0.2]]
    relevance = [[True, False, True, False, True], [False, True, False, True, False]]
    for ties in retrieval.TIES:  # no ties: every rule agrees
        scores = retrieval_scores(similarity, relevance, ks=(1,), ties=ties)
        assert scores["image_to_text"] == pytest.approx(summary([1, 1], (1,), 143 / 180))
        assert scores["text_to_image"] == pytest.approx(summary([1, 1, 2, 1, 1], (1,), 9 / 10))


@pytest.mark.parametrize("sort_above", [0, retrieval.SORT_ABOVE])
def test_map_is_sklearn_average_precision_per_query(
    sort_above: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    monkeypatch.setattr(retrieval, "SORT_ABOVE", sort_above)
    generator = torch.Generator().manual_seed(1)
    for n_images, n_texts in ((8, 40), (30, 12)):
        relevance = torch.rand(n_images, n_texts, generator=generator) < 0.3
        relevance[torch.arange(n_texts) % n_images, torch.arange(n_texts)] = True
        relevance[torch.arange(n_images), torch.arange(n_images) % n_texts] = True
        # Distinct scores: every tie rule gives sklearn's value. With ties, "pessimistic" still
        # does, as sklearn puts tied items at one threshold.
        distinct = torch.rand(n_images, n_texts, generator=generator, dtype=torch.float64)
        tied = torch.randint(0, 3, (n_images, n_texts), generator=generator).double()
        cases = [(distinct, tie) for tie in retrieval.TIES] + [(tied, "pessimistic")]
        for similarity, ties in cases:
            scores = retrieval_scores(similarity, relevance, ties=ties)
            for direction, (sim, rel) in (
                ("image_to_text", (similarity, relevance)),
                ("text_to_image", (similarity.T, relevance.T)),
            ):
                per_query = [
                    metrics.average_precision_score(r, s)
                    for s, r in zip(sim.numpy(), rel.numpy(), strict=True)
                ]
                assert scores[direction]["mAP"] == pytest.approx(np.mean(per_query))


def test_accepts_integer_scores_and_tensors_needing_grad() -> None:
    similarity = torch.tensor([[2.0, 1.0], [3.0, 0.0]], requires_grad=True)
    # image 0 -> 1; image 1: 3 > 0 -> 2. text 0: 3 > 2 -> 2; text 1: 0 < 1 -> 2.
    scores = retrieval_scores(similarity, ks=(1,))
    assert scores["image_to_text"] == pytest.approx(summary([1, 2], (1,)))
    assert scores["text_to_image"] == pytest.approx(summary([2, 2], (1,)))
    assert retrieval_scores(np.array([[2, 1], [3, 0]]), ks=(1,)) == scores


def test_errors() -> None:
    with pytest.raises(ValueError, match="1 of 2 images have no relevant text"):
        retrieval_scores(torch.rand(2, 3), [[True, True, True], [False, False, False]])
    with pytest.raises(ValueError, match="2 of 3 texts have no relevant image"):
        retrieval_scores(torch.rand(2, 3), [[True, False, False], [True, False, False]])
    with pytest.raises(ValueError, match="square"):
        retrieval_scores(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"relevance has shape \(3, 2\)"):
        retrieval_scores(torch.rand(2, 3), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-empty"):
        retrieval_scores(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="non-empty"):
        retrieval_scores(torch.rand(3))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_scores(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="ties must be one of"):
        retrieval_scores(torch.eye(2), ties="random")
    with pytest.raises(ValueError, match="positive integers"):
        retrieval_scores(torch.eye(2), ks=(0, 1))
