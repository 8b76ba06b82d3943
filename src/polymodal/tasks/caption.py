"""Captioning: a text field generated from an image encoder's tokens, scored with the COCO
caption metrics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from polymodal.config import CaptionConfig
from polymodal.data.modalities.target_text import TargetTextPreprocessor
from polymodal.data.modalities.text import BOS, EOS, PAD, UNK
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError
from polymodal.metrics.captioning import caption_scores
from polymodal.models.decoder import CaptionDecoder, DecoderScorer
from polymodal.models.decoding import Scorer, SearchOptions, Vocab, search
from polymodal.models.encoders.base import Encoded
from polymodal.tasks.base import Task, TaskContext, check_field

Outputs = dict[str, torch.Tensor]


class Caption(Task):
    """A transformer decoder over the ``image`` field's encoder tokens generates ``target``.

    Training reads one reference per row (a random one, or each in turn with ``references:
    all``) by teacher forcing; evaluation decodes (``search``) and scores the texts against
    all references with BLEU-1..4, ROUGE-L, CIDEr-D (and METEOR when asked), computed as the
    official COCO caption evaluation does. Rows without the image or without references are
    left out of the loss and the metrics. The main metric, CIDEr-D, is not bounded by 1: next
    to other tasks, ``train.select`` weighs it in the validation score.
    """

    uses_fusion = False
    main_metric = "CIDEr"

    def __init__(
        self,
        image: str,
        target: str,
        text: TargetTextPreprocessor,
        decoder: CaptionDecoder,
        search: SearchOptions,
        label_smoothing: float = 0.0,
        references: str = "random",
        meteor: bool = False,
    ) -> None:
        super().__init__()
        self.image, self.target, self.text = image, target, text
        self.decoder = decoder
        self.options = search
        self.label_smoothing = label_smoothing
        self.all_references = references == "all"
        self.meteor = meteor
        specials = (text.special(PAD), text.special(BOS), text.special(UNK))
        self.vocab = Vocab(text.special(BOS), text.special(EOS), text.special(PAD), specials)

    @classmethod
    def from_config(cls, config: CaptionConfig, context: TaskContext) -> Caption:
        check_field(context.preprocessor, config.target, context.where, ("text",))
        text = context.preprocessor.fields[config.target]
        if not isinstance(text, TargetTextPreprocessor):
            raise ConfigError(
                f"{context.where}: text field '{config.target}' is an input; a caption task "
                f"generates a target: set data.fields.{config.target}.role: target"
            )
        context.check_input(config.image)
        decoder = CaptionDecoder(
            len(text.vocab),
            context.encoder_dims[config.image],
            config.dim,
            config.layers,
            config.heads,
            config.dropout,
            positions=max(text.max_length, config.max_length) + 1,
        )
        options = SearchOptions(
            config.beam_size, config.max_length, config.length_penalty, config.no_repeat_ngram
        )
        return cls(
            config.image,
            config.target,
            text,
            decoder,
            options,
            config.label_smoothing,
            config.references,
            config.meteor,
        )

    def encoder_outputs(self) -> dict[str, set[str]]:
        return {self.image: {"tokens"}}

    def describe(self) -> list[str]:
        return [f"{self.target}: a vocabulary of {len(self.text.vocab)} words (specials included)"]

    def network(
        self,
        fused: torch.Tensor | None,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
    ) -> Outputs:
        """The decoder's ``memory`` and ``memory_mask``, and which rows have an image."""
        image = encoded[self.image]
        seen = present[self.image]
        memory, mask = self.decoder.memory(image.tokens, image.token_mask & seen[:, None])
        return {"memory": memory, "memory_mask": mask, "image_present": seen}

    def forward(
        self,
        fused: torch.Tensor | None,
        encoded: dict[str, Encoded],
        present: dict[str, torch.Tensor],
    ) -> Outputs:
        """``network``'s outputs; out of training also each row's decoded ``tokens``
        (B, max_length), their ``lengths`` and ``scores``."""
        outputs = self.network(fused, encoded, present)
        if not self.training:
            memory = outputs["memory"]
            scorer = DecoderScorer(self.decoder, memory, outputs["memory_mask"])
            outputs |= self.decoded(scorer, len(memory), memory.device)
        return outputs

    def decoded(self, scorer: Scorer, rows: int, device: torch.device | None = None) -> Outputs:
        """``tokens``, ``lengths`` and ``scores`` of the search (``SearchOptions``) over
        ``scorer``, the decoder on its memory of ``rows`` images (eager or exported)."""
        decoded = search(scorer, rows, self.vocab, self.options, device or torch.device("cpu"))
        return {"tokens": decoded.tokens, "lengths": decoded.lengths, "scores": decoded.scores}

    def kept(self, outputs: Outputs, batch: Batch) -> torch.Tensor:
        """(B,) True for the rows with an image and references."""
        return batch.present[self.target] & outputs["image_present"]

    def loss(self, outputs: Outputs, batch: Batch) -> torch.Tensor:
        keep = self.kept(outputs, batch).nonzero().squeeze(1)
        if not len(keep):
            return outputs["memory"].sum() * 0.0
        texts = self.text.references(
            batch.values[self.target][keep], batch.lengths[self.target][keep]
        )
        if self.all_references:
            rows = torch.tensor([i for i, refs in enumerate(texts) for _ in refs])
            chosen = [text for refs in texts for text in refs]
        else:
            picks = [int(torch.randint(len(refs), ())) for refs in texts]
            rows = torch.arange(len(texts))
            chosen = [refs[k] for refs, k in zip(texts, picks, strict=True)]
        device = outputs["memory"].device
        inputs, targets = (t.to(device) for t in self.text.teacher_forcing(chosen))
        at = keep[rows.to(device)]
        logits = self.decoder(inputs, outputs["memory"][at], outputs["memory_mask"][at])
        return F.cross_entropy(
            logits.flatten(0, 1),
            targets.flatten(),
            ignore_index=self.vocab.pad,
            label_smoothing=self.label_smoothing,
        )

    def collect(self, outputs: Outputs, batch: Batch) -> dict[str, torch.Tensor]:
        keep = self.kept(outputs, batch)
        return {
            "tokens": outputs["tokens"][keep],
            "lengths": outputs["lengths"][keep],
            "scores": outputs["scores"][keep],
            "references": self.text.full_width(batch.values[self.target][keep]),
            "reference_lengths": batch.lengths[self.target][keep],
        }

    def captions(self, collected: dict[str, torch.Tensor]) -> list[str]:
        """The generated text of each collected row."""
        return [
            self.text.decode(row[:length])
            for row, length in zip(
                collected["tokens"].tolist(), collected["lengths"].tolist(), strict=True
            )
        ]

    def references(self, collected: dict[str, torch.Tensor]) -> list[list[str]]:
        """The reference texts of each collected row."""
        return self.text.references(collected["references"], collected["reference_lengths"])

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, Any]:
        references = self.references(collected)
        candidates = self.captions(collected)
        scores = caption_scores(
            dict(enumerate(references)), dict(enumerate(candidates)), meteor=self.meteor
        )
        corpus = {name: value for name, value in scores["corpus"].items() if value is not None}
        lengths = collected["lengths"].float()
        return {**corpus, "rows": len(references), "mean_words": float(lengths.mean())}

    def postprocess(self, outputs: Outputs, index: int) -> dict[str, Any]:
        length = int(outputs["lengths"][index])
        return {
            "caption": self.text.decode(outputs["tokens"][index, :length].tolist()),
            "score": float(outputs["scores"][index]),
        }
