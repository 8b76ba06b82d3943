"""Answers to a question (VQA): the answer vocabulary fitted on the train rows, and each row's
VQA score of every answer in it.

A cell holds the human answers: a list (VQA v2: ten; a CSV cell may hold its JSON text) or one
answer string (easy-VQA). The vocabulary is every train row's consensus answer (the most
frequent of its answers after the official normalisation), most frequent first; each entry is
shown as the form its annotators typed most often. A row reads as its candidates, the
vocabulary entries a prediction can score on, with their scores:

- several human answers: the official VQA accuracy of predicting the entry
  (``polymodal.metrics.vqa.answer_accuracy``: min(1, matches / 3) averaged over the
  leave-one-out subsets), so training targets and the official scoring agree exactly;
- one answer: 1 for the entry equal to it after the official normalisation (one annotator
  leaves no one to agree with, where the official score would be 0 for any prediction).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from polymodal.data.modalities.base import FieldBase, json_list, pad_batch
from polymodal.data.schema import is_absent
from polymodal.errors import RowError
from polymodal.metrics.vqa import answer_accuracy, clean_answer, normalize_answer

# a read row's columns: vocabulary id, VQA score, 1 where the entry is the consensus answer
CANDIDATE_COLUMNS = 3


def human_answers(value: Any) -> list[str]:
    """The answers a cell holds: a non-empty list of strings, or one string; else RowError."""
    answers = json_list(value)
    if answers is None:
        answers = [value]
    if not answers or not all(isinstance(answer, str) for answer in answers):
        raise RowError(
            "bad answers",
            f"expected an answer string or a non-empty list of answer strings, got {value!r:.60}",
        )
    return answers


def consensus(answers: list[str]) -> str:
    """The most frequent answer after the official normalisation (the first of a tie)."""
    return Counter(normalize_answer(answer) for answer in answers).most_common(1)[0][0]


class AnswersPreprocessor(FieldBase):
    """Human answers to candidate (vocabulary id, VQA score, is consensus) rows."""

    kind = "answers"

    def __init__(
        self,
        column: str,
        answers: list[str] | None = None,
        counts: list[int] | None = None,
        questions: int = 0,
    ) -> None:
        self.column = column
        self._seen: dict[str, Counter[str]] = {}  # normalised answer -> its typed forms
        self._consensus: Counter[str] = Counter()
        self._set_vocabulary(answers or [], counts or [], questions)

    def _set_vocabulary(self, answers: list[str], counts: list[int], questions: int) -> None:
        self.answers, self.counts, self.questions = list(answers), list(counts), questions
        self._by_form = {answer: i for i, answer in enumerate(self.answers)}
        self._by_norm = {normalize_answer(answer): i for i, answer in enumerate(self.answers)}

    def observe(self, row: dict[str, Any]) -> None:
        """Count the row's consensus answer and the typed forms of all its answers; a bad
        cell is left out here (reading quarantines its row)."""
        value = row.get(self.column)
        if is_absent(value):
            return
        try:
            answers = human_answers(value)
        except RowError:
            return
        self._consensus[consensus(answers)] += 1
        for answer in answers:
            self._seen.setdefault(normalize_answer(answer), Counter())[clean_answer(answer)] += 1

    def finish(self) -> None:
        """The vocabulary: consensus answers, most frequent first (ties alphabetical)."""
        ranked = sorted(self._consensus.items(), key=lambda item: (-item[1], item[0]))
        answers = [self._seen[norm].most_common(1)[0][0] for norm, _ in ranked]
        self._set_vocabulary(answers, [n for _, n in ranked], sum(self._consensus.values()))

    def coverage(self, top_k: int) -> float:
        """Share of the train questions whose consensus answer is among the first ``top_k``."""
        return sum(self.counts[:top_k]) / self.questions if self.questions else 0.0

    def scores(self, answers: list[str]) -> dict[int, float]:
        """Vocabulary id -> VQA score of predicting that entry, for the entries that score."""
        if len(answers) == 1:
            found = self._by_norm.get(normalize_answer(answers[0]))
            return {} if found is None else {found: 1.0}
        typed = {clean_answer(answer) for answer in answers}
        if len(typed) == 1:  # the humans agree: the official compares answers as typed
            ids = {self._by_form.get(answer) for answer in typed}
        else:
            ids = {self._by_norm.get(normalize_answer(answer)) for answer in typed}
        scored = {i: answer_accuracy(self.answers[i], answers) for i in ids if i is not None}
        return {i: score for i, score in scored.items() if score > 0}

    def read(self, value: Any, base_dir: Path, training: bool = False) -> torch.Tensor:
        """(candidates, 3) float64 rows: vocabulary id, VQA score, 1 for the consensus entry
        (present even when it scores 0, absent when it is not in the vocabulary)."""
        answers = human_answers(value)
        scores = self.scores(answers)
        agreed = self._by_norm.get(consensus(answers))
        ids = sorted(scores.keys() | ({agreed} if agreed is not None else set()))
        rows = [[i, scores.get(i, 0.0), float(i == agreed)] for i in ids]
        return torch.tensor(rows, dtype=torch.float64).reshape(-1, CANDIDATE_COLUMNS)

    def collate(self, items: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        return pad_batch(items, (CANDIDATE_COLUMNS,), torch.float64)

    def encoder_args(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Any]:
        return {"answers": self.answers, "counts": self.counts, "questions": self.questions}

    @classmethod
    def from_state(cls, column: str, state: dict[str, Any]) -> AnswersPreprocessor:
        return cls(column, state["answers"], state["counts"], state["questions"])
