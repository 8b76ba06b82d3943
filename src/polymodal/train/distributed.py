"""DDP building blocks: process-group set-up from torchrun's environment and collectives.

Every helper is a no-op (or the identity) in a single process, so the trainer calls them
unconditionally. Launch with ``torchrun --nproc_per_node=N -m polymodal train CONFIG``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from polymodal.errors import ConfigError
from polymodal.losses import all_gather_with_grad

__all__ = [
    "DistContext",
    "all_gather_with_grad",
    "barrier",
    "broadcast_object",
    "gather_variable",
    "init_distributed",
    "shutdown_distributed",
]

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, writes checkpoints and reports."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process, so gradients and metrics must be combined across ranks."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def _device(device: str, local_rank: int) -> torch.device:
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not one of 'auto', 'cpu', 'cuda'")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but CUDA is not available; use 'cpu' or 'auto'")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
            "lower torchrun's --nproc_per_node"
        )
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> DistContext:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and join the process group.

    Without them this is one process and no group is made. ``device="auto"`` takes
    ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU; ``"cpu"`` and ``"cuda"`` force
    one (a ConfigError when CUDA is missing). With ``WORLD_SIZE > 1`` the default group is
    initialised once: NCCL on CUDA, gloo on the CPU.

    >>> init_distributed("cpu")
    DistContext(rank=0, world_size=1, local_rank=0, device=device(type='cpu'))
    """
    rank, world_size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    chosen = _device(device, local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, chosen)


def shutdown_distributed() -> None:
    """Destroy the default process group if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _enabled() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_variable(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows concatenated in rank order, when ranks hold different row counts.

    For predictions over a whole split: sizes are gathered, rows padded to the largest,
    gathered and trimmed. Any dtype; a rank may hold 0 rows; trailing dims must agree.
    No gradient flows back. In a single process ``tensor`` is returned (detached).
    """
    tensor = tensor.detach()
    if not _enabled():
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([len(tensor)], device=tensor.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: len(tensor)] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def broadcast_object(value: T, src: int = 0) -> T:
    """``value`` from rank ``src`` on every rank (pickled; for small trusted objects only)."""
    if not _enabled():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait until every rank gets here."""
    if not _enabled():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def sum_over_ranks(values: list[float]) -> list[float]:
    """Each value summed over every rank (as float64); ``values`` as given in one process."""
    if not _enabled():
        return values
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    )
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()
