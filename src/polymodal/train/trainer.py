"""The Trainer: AdamW, warmup + cosine schedule, clipping, per-epoch validation, best checkpoint."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from polymodal.config import TrainConfig
from polymodal.data.pipeline import Example
from polymodal.inference import evaluate_model, main_score
from polymodal.models.model import MultimodalModel
from polymodal.progress import progress_bar


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warmup to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class TrainResult:
    best_dir: Path
    best_epoch: int
    best_score: float | None  # None without validation rows (the last epoch is kept)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class Trainer:
    """Trains ``model`` on ``train`` examples, validating on ``val`` after every epoch.

    Writes ``out_dir/metrics.jsonl`` (one line per epoch) and the best model (by the tasks'
    main metrics on ``val``; the last epoch, with no score, when there are no val rows) to
    ``out_dir/best``.
    """

    def __init__(
        self,
        model: MultimodalModel,
        train: list[Example],
        val: list[Example],
        config: TrainConfig,
        out_dir: str | Path,
        seed: int = 0,
        log: Any = None,
    ) -> None:
        self.model = model
        self.train_examples = train
        self.val_examples = val
        self.config = config
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.log = log or (lambda message: None)

    def _optimizer(self) -> torch.optim.Optimizer:
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        rest = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": self.config.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.config.lr)

    def fit(self) -> TrainResult:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        generator = seed_everything(self.seed)
        device = torch.device(cfg.device)
        model = self.model.to(device)
        loader = DataLoader(
            self.train_examples,  # type: ignore[arg-type]
            batch_size=cfg.batch_size,
            shuffle=True,
            collate_fn=model.preprocessor.collate,
            generator=generator,
            drop_last=len(self.train_examples) > cfg.batch_size,
        )
        total = cfg.epochs * len(loader)
        optimizer = self._optimizer()
        warmup = int(cfg.warmup_ratio * total)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total)
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        history_path = self.out_dir / "metrics.jsonl"
        history_path.write_text("", encoding="utf-8")
        best = TrainResult(self.out_dir / "best", 0, None)
        start = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            losses = []
            for batch in progress_bar(loader, f"epoch {epoch}/{cfg.epochs}"):
                loss, _ = model.loss(batch.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
            val = evaluate_model(model, self.val_examples, device=cfg.device)
            score = main_score(val, model) if val else None
            record = {
                "epoch": epoch,
                "train_loss": sum(losses) / max(1, len(losses)),
                "lr": schedule.get_last_lr()[0],
                "val_score": score,
                "val": val,
                "seconds": round(time.perf_counter() - start, 3),
            }
            best.history.append(record)
            with history_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            improved = score is None or best.best_score is None or score > best.best_score
            if improved:
                best.best_epoch, best.best_score = epoch, score
                model.save_pretrained(best.best_dir)
            shown = "" if score is None else f"  val {score:.4f}{'  (best)' if improved else ''}"
            self.log(f"epoch {epoch}/{cfg.epochs}  loss {record['train_loss']:.4f}{shown}")
        best.seconds = time.perf_counter() - start
        return best
