"""Visual question answering: scores over an answer vocabulary from the fused image + question."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from polymodal.config import VQAConfig
from polymodal.data.modalities.answers import AnswersPreprocessor
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError
from polymodal.metrics.vqa import mean_accuracy
from polymodal.tasks.base import FusedHead, TaskContext, check_field

TOP_ANSWERS = 5  # answers, with their scores, in a prediction


class VQA(FusedHead):
    """MLP head -> one logit per vocabulary answer; binary cross-entropy against each row's
    VQA v2 soft scores (``polymodal.data.modalities.answers``), over rows with answers.

    ``vqa_accuracy`` is the official VQA accuracy of the top answer (what
    ``polymodal.metrics.vqa.vqa_scores`` gives the same predictions), ``accuracy`` the share of
    top answers equal to the row's consensus answer. ``polymodal eval`` reports both per
    question type and answer type where the manifest has those columns.
    """

    main_metric = "vqa_accuracy"
    slice_columns = ("question_type", "answer_type")  # what VQA v2 (and our sources) write

    def __init__(
        self,
        target: str,
        answers: list[str],
        coverage: float,
        in_dim: int,
        hidden: int = 512,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(in_dim, hidden, len(answers), dropout)
        self.target = target
        self.answers = list(answers)
        self.coverage = coverage

    @classmethod
    def from_config(cls, config: VQAConfig, context: TaskContext) -> VQA:
        check_field(context.preprocessor, config.target, context.where, ("answers",))
        field = context.preprocessor.fields[config.target]
        assert isinstance(field, AnswersPreprocessor) and context.fused_dim is not None
        if not field.answers:
            raise ConfigError(
                f"{context.where}: answers field '{config.target}' has no answer in the train "
                "rows; give the train split's questions their answers"
            )
        top_k = min(config.top_k, len(field.answers))
        return cls(
            config.target,
            field.answers[:top_k],
            field.coverage(top_k),
            context.fused_dim,
            config.hidden,
            config.dropout,
        )

    def describe(self) -> list[str]:
        return [
            f"answers '{self.target}': the {len(self.answers)} most frequent cover "
            f"{self.coverage:.1%} of the train questions"
        ]

    def answer_scores(self, batch: Batch) -> torch.Tensor:
        """(B, answers, 2) float64: each answer's VQA score and whether it is the consensus."""
        candidates = batch.values[self.target]  # (B, candidates, 3): id, score, consensus
        ids = candidates[..., 0].long()
        inside = ids < len(self.answers)  # an answer outside the vocabulary scores nothing
        values = candidates[..., 1:] * inside.unsqueeze(-1)
        index = ids.where(inside, 0).unsqueeze(-1).expand(-1, -1, 2)
        dense = torch.zeros(len(ids), len(self.answers), 2, dtype=values.dtype, device=ids.device)
        return dense.scatter_add_(1, index, values)

    def kept(self, batch: Batch) -> torch.Tensor:
        """(B,) True for the rows with answers (those ``loss`` and ``collect`` read)."""
        return batch.present[self.target]

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Binary cross-entropy summed over the answers, averaged over the rows with answers."""
        keep = self.kept(batch)
        if not keep.any():
            return outputs.sum() * 0.0
        scores = self.answer_scores(batch)[keep][..., 0].to(outputs.dtype)
        logits = outputs[keep]
        return F.binary_cross_entropy_with_logits(logits, scores, reduction="sum") / len(logits)

    def collect(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """The top answer's VQA score and whether it is the consensus, per row with answers."""
        keep = self.kept(batch)
        top = outputs[keep].argmax(-1, keepdim=True)
        picked = self.answer_scores(batch)[keep].gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
        return {"vqa": picked[:, 0, 0], "consensus": picked[:, 0, 1]}

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, Any]:
        scores = collected["vqa"].tolist()
        return {
            "vqa_accuracy": mean_accuracy(scores),
            "accuracy": float(collected["consensus"].mean()),
            "rows": len(scores),
            "answers": len(self.answers),
            "answer_coverage": self.coverage,
        }

    def postprocess(self, outputs: torch.Tensor, index: int) -> dict[str, Any]:
        probs = outputs[index].sigmoid()
        top = probs.topk(min(TOP_ANSWERS, len(self.answers)))
        ranked = [
            {"answer": self.answers[int(i)], "score": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)
        ]
        return {"answer": ranked[0]["answer"], "top_answers": ranked}
