"""The Trainer: AdamW, warmup + cosine schedule, clipping, accumulation, precision, per-epoch
validation, the best model, checkpoints that resume bit for bit, DDP, TensorBoard."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.functional import one_hot
from torch.nn.parallel import DistributedDataParallel

from polymodal.config import DataConfig, TrainConfig
from polymodal.data.dataset import RowDataset, available_cpus, loader, workers_for
from polymodal.data.quarantine import Quarantine, QuarantinedRow
from polymodal.data.schema import Batch
from polymodal.errors import ConfigError, DataError, did_you_mean
from polymodal.inference import evaluate_model, main_score, selection_weights
from polymodal.models.model import MultimodalModel
from polymodal.progress import progress_bar
from polymodal.train.checkpoint import CheckpointKeeper, capture_rng, load_state, restore_rng
from polymodal.train.distributed import DistContext, gather_variable, sum_over_ranks
from polymodal.train.logging import TrainingLog
from polymodal.train.precision import resolve_precision
from polymodal.train.sampler import ResumableSampler

Log = Callable[[str], None]
LOG_EVERY = 20  # optimizer steps between TensorBoard points


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (the generators dropout and initialisation draw from)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warmup to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def drop_modalities(batch: Batch, inputs: list[str], rate: float) -> Batch:
    """``batch`` with each present input of each row marked absent with chance ``rate``; a row
    keeps at least one of the inputs it had (one drawn at random). Draws from torch's global
    RNG, which checkpoints save, so a resumed run drops the same ones."""
    if rate <= 0 or not inputs:
        return batch
    present = torch.stack([batch.present[name] for name in inputs], dim=1)  # (B, M)
    kept = present & (torch.rand(present.shape) >= rate)
    lost_all = present.any(1) & ~kept.any(1)
    if lost_all.any():
        scores = torch.rand(present.shape).masked_fill(~present, -1.0)
        rescued = one_hot(scores.argmax(1), len(inputs)).bool()
        kept |= rescued & lost_all.unsqueeze(1)
    masks = {name: kept[:, i] for i, name in enumerate(inputs)}
    return replace(batch, present={**batch.present, **masks})


class Schedule:
    """``warmup_cosine`` over a total that a time budget may shrink while the run goes on."""

    def __init__(self, warmup_ratio: float, total: int) -> None:
        self.warmup_ratio = warmup_ratio
        self.total = total

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, int(self.warmup_ratio * self.total), self.total)


@dataclass
class TrainResult:
    best_dir: Path
    best_epoch: int
    best_score: float | None  # None without validation rows (the last epoch is kept)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None  # why training ended before its last epoch, if it did


def parameter_groups(model: MultimodalModel, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight matrices decay, biases and norms do not; each encoder's
    ``lr_scale`` multiplies its learning rate."""
    scales = {f"encoders.{n}.": c.lr_scale for n, c in model.config.encoders.items()}
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        scale = next((s for prefix, s in scales.items() if name.startswith(prefix)), 1.0)
        groups.setdefault((scale, parameter.ndim >= 2), []).append(parameter)
    return [
        {"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        for (scale, decay), params in sorted(groups.items(), key=lambda item: item[0])
    ]


def choose_threads(workers: int, requested: int | None) -> int:
    """Torch CPU threads: as asked, else the CPUs this process may use less the data workers
    (threads beyond the free cores only thrash, and slow everyone on a busy machine)."""
    return requested or max(1, available_cpus() - workers)


class Trainer:
    """Trains ``model`` on the ``train`` dataset, validating on ``val`` after every epoch.

    Writes ``out_dir/metrics.jsonl`` (one line per epoch), TensorBoard events, checkpoints in
    ``out_dir/checkpoints`` and the best model (by the tasks' main metrics on ``val``; the
    last epoch, with no score, when there are no val rows) to ``out_dir/best``. Only the
    main DDP rank writes.
    """

    def __init__(
        self,
        model: MultimodalModel,
        train: RowDataset,
        val: RowDataset | None,
        config: TrainConfig,
        data: DataConfig,
        out_dir: str | Path,
        dist: DistContext,
        quarantine: Quarantine,
        seed: int = 0,
        log: Log | None = None,
    ) -> None:
        self.model = model
        self.train_data = train.for_training()  # random crops (audio, video)
        self.val_data = val if val is not None and len(val) else None
        self.config = config
        self.workers = workers_for(data)
        self.out_dir = Path(out_dir)
        self.dist = dist
        self.quarantine = quarantine
        self.seed = seed
        self.log = log if log is not None and dist.is_main else (lambda message: None)

    # --- pieces -------------------------------------------------------------------------

    def _batches(self, sampler: ResumableSampler) -> Any:
        """The train loader, made once: persistent workers serve every epoch."""
        return loader(
            self.train_data,
            self.model.preprocessor.collate,
            self.config.batch_size // self.dist.world_size,
            self.workers,
            sampler,
            self.dist.device,
        )

    def _groups(self, model: MultimodalModel) -> np.ndarray | None:
        """With ``train.group_by``, each train row's group (rows sharing the input's value),
        and the model set to encode that input once per distinct value in a batch."""
        field = self.config.group_by
        if field is None:
            return None
        if field not in model.inputs:
            raise ConfigError(
                f"train.group_by: '{field}' is not a model input{did_you_mean(field, model.inputs)}"
                f" (inputs: {', '.join(model.inputs)})"
            )
        model.distinct_inputs.add(field)
        return self.train_data.groups(model.preprocessor.schema.columns(field)[0])

    def _note_bad_rows(self, rows: list[QuarantinedRow]) -> None:
        for row in rows:
            self.quarantine.add(row)

    def _validate(self) -> dict[str, dict[str, Any]]:
        if self.val_data is None:
            return {}
        return evaluate_model(
            self.model,
            self.val_data,
            batch_size=max(256, self.config.batch_size),
            device=self.dist.device,
            workers=self.workers,
            shard=(self.dist.rank, self.dist.world_size),
            gather=gather_variable,
            quarantine=self.quarantine,
        )

    # --- the loop -----------------------------------------------------------------------

    def fit(self, resume: Path | None = None) -> TrainResult:
        cfg, dist = self.config, self.dist
        if cfg.batch_size % dist.world_size:
            raise ConfigError(
                f"train.batch_size {cfg.batch_size} must divide by the {dist.world_size} "
                "processes (it is the global batch)"
            )
        selection_weights(self.model, cfg.select)  # a task name it does not know: an error now
        if dist.device.type == "cpu":
            torch.set_num_threads(choose_threads(self.workers, cfg.threads))
            self.log(
                f"{torch.get_num_threads()} torch threads (train.threads), "
                f"{self.workers} data workers (data.workers)"
            )
        precision = resolve_precision(cfg.precision, dist.device, self.log)
        model = self.model.to(dist.device)
        wrapped: torch.nn.Module = model
        if dist.enabled:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            # Every trained parameter gets a gradient in every step (a model freezes the
            # encoder heads whose output it does not read), as plain DDP requires.
            wrapped = DistributedDataParallel(model, device_ids=ids)
        sampler = ResumableSampler(
            len(self.train_data),
            shuffle=True,
            seed=self.seed,
            rank=dist.rank,
            world_size=dist.world_size,
            drop_last=dist.enabled,
            groups=self._groups(model),
        )
        per_rank = cfg.batch_size // dist.world_size
        batches_per_epoch = max(1, math.ceil(sampler.per_rank / per_rank))
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate)
        schedule = Schedule(cfg.warmup_ratio, cfg.epochs * steps_per_epoch)
        groups = parameter_groups(model, cfg.weight_decay)
        optimizer = torch.optim.AdamW(
            [{**g, "lr": cfg.lr * g["lr_scale"]} for g in groups], lr=cfg.lr
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        scaler = precision.make_scaler()
        keeper = CheckpointKeeper(self.out_dir / "checkpoints", cfg.keep_checkpoints)
        state = _Progress()
        if resume is not None:
            rng, saved = load_state(
                resume, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler
            )
            state = _Progress.from_dict(saved)
            schedule.total = state.total_steps or schedule.total
            restore_rng(rng)
            self.log(f"resumed from {resume} (epoch {state.epoch}, step {state.step})")
        else:
            seed_everything(self.seed)
        history_path = self.out_dir / "metrics.jsonl"
        if dist.is_main:
            history_path.write_text(
                "".join(json.dumps(record) + "\n" for record in state.history), encoding="utf-8"
            )
        board = TrainingLog(self.out_dir, enabled=dist.is_main)
        best_dir = self.out_dir / "best"
        start = time.perf_counter() - state.seconds
        budget = cfg.max_minutes * 60 if cfg.max_minutes else None

        def checkpoint() -> None:
            state.seconds = time.perf_counter() - start
            state.total_steps = schedule.total
            if dist.is_main:
                keeper.save(
                    state.step,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    scaler=scaler,
                    rng=capture_rng(),
                    progress=state.to_dict(),
                )

        batches = self._batches(sampler)
        epoch = state.epoch
        while epoch < cfg.epochs and state.stopped is None:
            epoch += 1
            wrapped.train()
            sampler.set_epoch(epoch)
            sampler.set_start(state.batches_done * per_rank)
            timer = _Timer()
            for batch in timer.wrap(progress_bar(batches, f"epoch {epoch}/{cfg.epochs}")):
                self._note_bad_rows(batch.quarantined)
                state.batches_done += 1
                if not len(batch):  # every row of it was bad
                    continue
                loss = self._accumulate(wrapped, model, batch, precision, scaler)
                state.loss_sum += loss * len(batch)
                state.rows += len(batch)
                timer.rows += len(batch)
                if state.batches_done % cfg.accumulate and state.batches_done < batches_per_epoch:
                    continue
                self._step(model, optimizer, scaler)
                scheduler.step()
                state.step += 1
                if dist.is_main and state.step % LOG_EVERY == 0:
                    board.scalars(state.step, timer.scalars(loss, scheduler), "train")
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    checkpoint()
                if budget and time.perf_counter() - start > budget:
                    state.stopped = f"time budget of {cfg.max_minutes:g} minutes"
                    break
            if not timer.rows and not state.step:
                counts = ", ".join(f"{n} {r}" for r, n in self.quarantine.counts().items())
                if dist.is_main:
                    self.quarantine.write(self.out_dir / "quarantine.jsonl")
                raise DataError(
                    "no train row can be used, nothing to train on (every row read in epoch "
                    f"{epoch} was bad; quarantined: {counts or 'none'})"
                )
            val = self._validate()
            score = main_score(val, model, cfg.select) if val else None
            loss_sum, rows = sum_over_ranks([state.loss_sum, state.rows])
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / max(1, rows),
                "lr": scheduler.get_last_lr()[0],
                "val_score": score,
                "val": val,
                "rows_per_s": round(sum_over_ranks([timer.rows])[0] / max(timer.total, 1e-9), 1),
                "data_wait": round(timer.waiting / max(timer.total, 1e-9), 4),
                "seconds": round(time.perf_counter() - start, 3),
            }
            state.history.append(record)
            improved = state.improve(score, self._watched(val, score), cfg)
            if dist.is_main:
                with history_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                board.metrics(state.step, val)
                board.scalars(state.step, {"rows_per_s": record["rows_per_s"]}, "train")
                if improved:
                    model.save_pretrained(best_dir)
                if len(self.quarantine):
                    self.quarantine.write(self.out_dir / "quarantine.jsonl")
            shown = "" if score is None else f"  val {score:.4f}{'  (best)' if improved else ''}"
            self.log(f"epoch {epoch}/{cfg.epochs}  loss {record['train_loss']:.4f}{shown}")
            if state.patience_left == 0:
                state.stopped = f"no improvement for {cfg.early_stopping.patience} epochs"  # type: ignore[union-attr]
            if budget and state.stopped is None:
                schedule.total = self._fit_budget(state, steps_per_epoch, budget, start)
            state.epoch, state.batches_done, state.loss_sum, state.rows = epoch, 0, 0.0, 0
            checkpoint()
        board.close()
        if state.stopped:
            self.log(f"stopped early: {state.stopped}")
        return TrainResult(
            best_dir,
            state.best_epoch,
            state.best_score,
            state.history,
            time.perf_counter() - start,
            state.stopped,
        )

    def _accumulate(
        self,
        wrapped: torch.nn.Module,
        model: MultimodalModel,
        batch: Batch,
        precision: Any,
        scaler: torch.amp.GradScaler | None,
    ) -> float:
        """Forward and backward of one batch; its gradient adds to those before it."""
        batch = drop_modalities(batch, model.inputs, self.config.modality_dropout)
        batch = batch.to(self.dist.device)
        with precision.autocast(self.dist.device):
            loss, _ = model.losses(wrapped(batch), batch)
        scaled = loss / self.config.accumulate
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        return float(loss.detach())

    def _step(
        self,
        model: MultimodalModel,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _watched(self, val: dict[str, Any], score: float | None) -> float | None:
        """The number early stopping watches: ``TASK.METRIC``, or the best-model score."""
        stopping = self.config.early_stopping
        if stopping is None or stopping.metric is None or not val:
            return score
        task, _, metric = stopping.metric.partition(".")
        return float(val[task][metric])

    def _fit_budget(
        self, state: _Progress, steps_per_epoch: int, budget: float, start: float
    ) -> int:
        """The schedule's total steps, shrunk so the remaining epochs fit the time budget."""
        elapsed = time.perf_counter() - start
        per_epoch = elapsed / max(1, len(state.history))
        epochs_fit = len(state.history) + max(0, int((budget - elapsed) / per_epoch))
        return max(state.step, min(self.config.epochs, epochs_fit) * steps_per_epoch)


class _Timer:
    """Splits an epoch's time into waiting for data and the rest."""

    def __init__(self) -> None:
        self.waiting = 0.0
        self.started = time.perf_counter()
        self.rows = 0

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started

    def wrap(self, batches: Any) -> Iterator[Batch]:
        iterator = iter(batches)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            self.waiting += time.perf_counter() - asked
            yield batch

    def scalars(self, loss: float, scheduler: Any) -> dict[str, float]:
        return {
            "loss": loss,
            "lr": scheduler.get_last_lr()[0],
            "rows_per_s": self.rows / max(self.total, 1e-9),
            "data_wait_fraction": self.waiting / max(self.total, 1e-9),
        }


@dataclass
class _Progress:
    """Where a run stands: what a checkpoint saves besides tensors (JSON)."""

    epoch: int = 0  # epochs finished
    batches_done: int = 0  # batches of the current epoch already trained on
    step: int = 0  # optimizer steps
    loss_sum: float = 0.0
    rows: int = 0
    best_epoch: int = 0
    best_score: float | None = None
    watched_best: float | None = None
    patience_left: int | None = None
    total_steps: int | None = None
    seconds: float = 0.0
    stopped: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def improve(self, score: float | None, watched: float | None, cfg: TrainConfig) -> bool:
        """Record an epoch's scores; True when its model is the best so far."""
        epoch = len(self.history)
        improved = score is None or self.best_score is None or score > self.best_score
        if improved:
            self.best_epoch, self.best_score = epoch, score
        if cfg.early_stopping is not None and watched is not None:
            delta = cfg.early_stopping.min_delta
            if self.watched_best is None or watched > self.watched_best + delta:
                self.watched_best, self.patience_left = watched, cfg.early_stopping.patience
            else:
                self.patience_left = (self.patience_left or cfg.early_stopping.patience) - 1
        return improved

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> _Progress:
        return cls(**saved)
