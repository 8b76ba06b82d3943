from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polymodal.losses import (
    MAX_LOGIT_SCALE,
    HingeTripletLoss,
    InfoNCELoss,
    LabelSmoothingCrossEntropy,
    SigLIPLoss,
    hinge_triplet,
    info_nce,
    label_smoothing_cross_entropy,
    retrieval_loss,
    siglip,
)


def hinge_reference(query: torch.Tensor, gallery: torch.Tensor, margin: float, hardest: bool):
    """VSE0 / VSE++ one pair and one negative at a time."""
    q, g = F.normalize(query, dim=-1), F.normalize(gallery, dim=-1)
    n = len(q)
    total = 0.0
    for i in range(n):
        positive = float(q[i] @ g[i])
        to_gallery = [max(0.0, margin - positive + float(q[i] @ g[j])) for j in range(n) if j != i]
        to_query = [max(0.0, margin - positive + float(q[j] @ g[i])) for j in range(n) if j != i]
        combine = max if hardest else sum
        total += combine(to_gallery) + combine(to_query)
    return total / n


def siglip_reference(query: torch.Tensor, gallery: torch.Tensor, scale: float, bias: float):
    q, g = F.normalize(query, dim=-1), F.normalize(gallery, dim=-1)
    n = len(q)
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if i == j else -1.0
            logit = scale * float(q[i] @ g[j]) + bias
            total -= math.log(1.0 / (1.0 + math.exp(-label * logit)))
    return total / n


@pytest.mark.parametrize("hardest", [False, True])
def test_hinge_triplet_matches_reference(hardest):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    gallery = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    loss = hinge_triplet(query, gallery, margin=0.3, hardest=hardest)
    assert float(loss) == pytest.approx(hinge_reference(query, gallery, 0.3, hardest), abs=1e-6)


def test_hinge_triplet_by_hand():
    # unit vectors: s = [[1, 0], [0.6, 0.8]] (rows: queries, columns: gallery items)
    query = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # query 0: 0.2 - 1 + 0 -> 0; query 1: 0.2 - 0.8 + 0.6 = 0
    # gallery 0: 0.2 - 1 + 0.6 -> 0; gallery 1: 0.2 - 0.8 + 0 -> 0  (margin 0.2: all zero)
    assert float(hinge_triplet(query, gallery, margin=0.2)) == pytest.approx(0.0, abs=1e-6)
    # margin 0.5: query 0: 0; query 1: 0.3; gallery 0: 0.1; gallery 1: 0 -> (0.3 + 0.1) / 2
    assert float(hinge_triplet(query, gallery, margin=0.5)) == pytest.approx(0.2, abs=1e-6)
    # one negative per item, so the hardest is the only one
    assert float(hinge_triplet(query, gallery, 0.5, hardest=True)) == pytest.approx(0.2, abs=1e-6)


def test_hinge_sum_and_hardest_by_hand():
    query = torch.eye(3)
    gallery = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.8, 0.6]])
    # s = [[1, 0, 0], [0, 1, 0.8], [0, 0, 0.6]], margin 0.7; hinges over negatives:
    # query 1: 0.5 (gallery 2); query 2: 0.1 and 0.1; gallery 2: 0.1 (query 0) and 0.9 (query 1)
    summed = hinge_triplet(query, gallery, margin=0.7)
    hardest = hinge_triplet(query, gallery, margin=0.7, hardest=True)
    assert float(summed) == pytest.approx((0.5 + 0.2 + 1.0) / 3, abs=1e-6)
    assert float(hardest) == pytest.approx((0.5 + 0.1 + 0.9) / 3, abs=1e-6)


def test_siglip_matches_reference():
    generator = torch.Generator().manual_seed(1)
    query = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    gallery = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    scale, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-10.0, dtype=torch.float64)
    loss = siglip(query, gallery, scale, bias)
    assert float(loss) == pytest.approx(siglip_reference(query, gallery, 10.0, -10.0), abs=1e-6)


def test_siglip_by_hand():
    # cosine [[1, 0], [0, 1]], scale 2, bias -1: logits [[1, -1], [-1, 1]], every label * logit = 1
    query, gallery = torch.eye(2), torch.eye(2)
    loss = siglip(query, gallery, torch.tensor(2.0), torch.tensor(-1.0))
    expected = 4 * math.log(1 + math.exp(-1.0)) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_siglip_one_row_scores_the_lone_positive():
    loss = siglip(torch.ones(1, 3), torch.ones(1, 3), torch.tensor(10.0), torch.tensor(-10.0))
    assert float(loss) == pytest.approx(math.log(2.0), abs=1e-6)  # logit 0


@pytest.mark.parametrize("rows", [0, 1])
@pytest.mark.parametrize("hardest", [False, True])
def test_hinge_triplet_empty_and_single_rows_give_zero_with_graph(rows, hardest):
    query = torch.randn(rows, 4, requires_grad=True)
    loss = hinge_triplet(query, torch.randn(rows, 4), hardest=hardest)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert query.grad is not None and torch.equal(query.grad, torch.zeros_like(query))


def test_siglip_empty_gives_zero_with_graph():
    query = torch.randn(0, 4, requires_grad=True)
    loss = siglip(query, torch.randn(0, 4), torch.tensor(10.0), torch.tensor(-10.0))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert query.grad is not None


@pytest.mark.parametrize("name", ["hinge_sum", "hinge_hardest", "siglip"])
def test_gradients_are_finite(name):
    query = torch.randn(8, 5, requires_grad=True)
    gallery = torch.randn(8, 5, requires_grad=True)
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    bias = torch.tensor(-10.0, requires_grad=True)
    if name == "siglip":
        loss = siglip(query, gallery, scale.exp(), bias)
    else:
        loss = hinge_triplet(query, gallery, margin=0.5, hardest=name == "hinge_hardest")
    loss.backward()
    grads = [query.grad, gallery.grad] + ([scale.grad, bias.grad] if name == "siglip" else [])
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert query.grad.abs().sum() > 0


def pairs(seed: int = 0, rows: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 5, generator=generator), torch.randn(rows, 5, generator=generator)


def test_info_nce_module_equals_the_function_at_its_learned_temperature():
    loss = InfoNCELoss(temperature=0.05)
    query, gallery = pairs()
    assert loss.temperature == pytest.approx(0.05)
    assert loss(query, gallery).item() == pytest.approx(info_nce(query, gallery, 20.0).item())
    loss(query, gallery).backward()
    assert loss.log_scale.grad is not None and float(loss.log_scale.grad) != 0.0
    assert [name for name, _ in loss.named_parameters()] == ["log_scale"]


@pytest.mark.parametrize("make", [InfoNCELoss, SigLIPLoss])
def test_learned_temperature_is_clamped_to_0_01_and_1(make):
    loss = make()
    query, gallery = pairs()
    with torch.no_grad():
        loss.log_scale.fill_(10.0)
    assert loss.logit_scale.item() == pytest.approx(100.0)
    assert loss.temperature == pytest.approx(0.01)
    loss(query, gallery).backward()
    assert float(loss.log_scale.grad) == 0.0  # at the bound the clamp passes no gradient
    with torch.no_grad():
        loss.log_scale.fill_(-3.0)
    assert loss.logit_scale.item() == pytest.approx(1.0)
    assert InfoNCELoss(temperature=0.001).logit_scale.item() == pytest.approx(
        math.exp(MAX_LOGIT_SCALE)
    )


def test_siglip_module_equals_the_function_with_the_paper_s_start():
    loss = SigLIPLoss()
    query, gallery = pairs(1)
    assert loss.logit_scale.item() == pytest.approx(10.0) and loss.logit_bias.item() == -10.0
    expected = siglip(query, gallery, torch.tensor(10.0), torch.tensor(-10.0))
    assert loss(query, gallery).item() == pytest.approx(expected.item(), rel=1e-6)
    loss(query, gallery).backward()
    assert float(loss.log_scale.grad) != 0.0 and float(loss.logit_bias.grad) != 0.0


@pytest.mark.parametrize("hardest", [False, True])
def test_hinge_module_equals_the_function(hardest):
    query, gallery = pairs(2)
    loss = HingeTripletLoss(margin=0.4, hardest=hardest)
    assert list(loss.parameters()) == []
    assert torch.equal(loss(query, gallery), hinge_triplet(query, gallery, 0.4, hardest))


def test_label_smoothing_cross_entropy_by_formula():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    targets = torch.tensor([0, 3, 1, 1, 2])
    smoothing = 0.2
    smoothed = torch.full((5, 4), smoothing / 4, dtype=torch.float64)
    smoothed[torch.arange(5), targets] += 1 - smoothing
    expected = -(smoothed * logits.log_softmax(-1)).sum(-1).mean()
    loss = label_smoothing_cross_entropy(logits, targets, smoothing)
    assert float(loss) == pytest.approx(float(expected), abs=1e-9)
    assert float(LabelSmoothingCrossEntropy(smoothing)(logits, targets)) == float(loss)
    plain = label_smoothing_cross_entropy(logits, targets)
    assert float(plain) == pytest.approx(float(F.cross_entropy(logits, targets)), abs=1e-12)


def test_label_smoothing_cross_entropy_of_no_rows_is_zero_with_graph():
    logits = torch.randn(0, 3, requires_grad=True)
    loss = LabelSmoothingCrossEntropy(0.1)(logits, torch.zeros(0, dtype=torch.long))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert logits.grad is not None


def test_retrieval_loss_names():
    assert isinstance(retrieval_loss("info_nce", temperature=0.5), InfoNCELoss)
    assert retrieval_loss("info_nce", temperature=0.5).temperature == pytest.approx(0.5)
    assert isinstance(retrieval_loss("siglip"), SigLIPLoss)
    hardest = retrieval_loss("hinge_hardest", margin=0.3)
    assert isinstance(hardest, HingeTripletLoss) and hardest.hardest and hardest.margin == 0.3
    assert not retrieval_loss("hinge_sum").hardest
