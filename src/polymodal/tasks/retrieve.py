"""Cross-modal retrieval: a joint embedding of two fields learned with a contrastive loss."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polymodal.config import RetrievalLoss, RetrieveConfig
from polymodal.data.schema import Batch
from polymodal.losses import hinge_triplet, info_nce_gathered, siglip
from polymodal.metrics.retrieval import retrieval_scores
from polymodal.models.encoders.base import Encoded
from polymodal.tasks.base import Task, TaskContext

MAX_LOGIT_SCALE = math.log(100.0)  # the temperature is learned but never below 0.01 (as CLIP)


class Retrieve(Task):
    """Projects the ``query`` and ``gallery`` fields' pooled vectors into one space.

    ``loss`` picks InfoNCE (learned temperature), the VSE hinge-triplet loss summed over
    negatives or on the hardest one (``margin``), or SigLIP (learned scale, initially 10, and
    bias, initially -10, as in the paper). Under DDP only InfoNCE draws negatives from every
    rank; the others score each rank's rows locally. The hinge losses learn no scale, since DDP
    refuses parameters that get no gradient.
    """

    uses_fusion = False
    main_metric = "mean_recall"

    def __init__(
        self,
        query: str,
        gallery: str,
        query_dim: int,
        gallery_dim: int,
        dim: int = 128,
        temperature: float = 0.07,
        loss: RetrievalLoss = "info_nce",
        margin: float = 0.2,
    ) -> None:
        super().__init__()
        self.query, self.gallery = query, gallery
        self.loss_name, self.margin = loss, margin
        self.query_proj = nn.Linear(query_dim, dim)
        self.gallery_proj = nn.Linear(gallery_dim, dim)
        if loss == "info_nce":
            self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        elif loss == "siglip":
            self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
            self.logit_bias = nn.Parameter(torch.tensor(-10.0))

    @classmethod
    def from_config(cls, config: RetrieveConfig, context: TaskContext) -> Retrieve:
        for side in (config.query, config.gallery):
            context.check_input(side)
        return cls(
            config.query,
            config.gallery,
            context.encoder_dims[config.query],
            context.encoder_dims[config.gallery],
            config.dim,
            config.temperature,
            config.loss,
            config.margin,
        )

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()

    def encoder_outputs(self) -> dict[str, set[str]]:
        return {self.query: {"pooled"}, self.gallery: {"pooled"}}

    def embed(self, field: str, encoded: Encoded) -> torch.Tensor:
        """The unit-length embeddings of ``field`` (the query or the gallery side)."""
        project = self.query_proj if field == self.query else self.gallery_proj
        return F.normalize(project(encoded.pooled), dim=-1)

    def forward(
        self,
        fused: torch.Tensor | None,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        return {
            "query": self.embed(self.query, encoded[self.query]),
            "gallery": self.embed(self.gallery, encoded[self.gallery]),
            "query_present": present[self.query],
            "gallery_present": present[self.gallery],
        }

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        keep = outputs["query_present"] & outputs["gallery_present"]
        query, gallery = outputs["query"][keep], outputs["gallery"][keep]
        if self.loss_name == "info_nce":
            return info_nce_gathered(query, gallery, self.logit_scale)
        if self.loss_name == "siglip":
            return siglip(query, gallery, self.logit_scale, self.logit_bias)
        return hinge_triplet(query, gallery, self.margin, hardest=self.loss_name == "hinge_hardest")

    def collect(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        keep = outputs["query_present"] & outputs["gallery_present"]
        return {"query": outputs["query"][keep], "gallery": outputs["gallery"][keep]}

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, Any]:
        similarity = collected["query"] @ collected["gallery"].T
        raw = retrieval_scores(similarity)
        forward, backward = f"{self.query}_to_{self.gallery}", f"{self.gallery}_to_{self.query}"
        scores: dict[str, Any] = {
            forward: raw["image_to_text"],
            backward: raw["text_to_image"],
            "gallery_size": len(similarity),
        }
        recalls = [
            v for d in (forward, backward) for k, v in scores[d].items() if k.startswith("R@")
        ]
        scores["mean_recall"] = sum(recalls) / len(recalls)
        if self.loss_name in ("info_nce", "siglip"):
            scores["temperature"] = float(1.0 / self.logit_scale.detach())
        return scores

    def postprocess(self, outputs: dict[str, torch.Tensor], index: int) -> dict[str, Any]:
        sides = ((self.query, "query"), (self.gallery, "gallery"))
        return {
            f"{field}_embedding": outputs[side][index].tolist()
            for field, side in sides
            if outputs[f"{side}_present"][index]
        }
