"""The ``train.precision`` policy: which autocast dtype a run uses and whether it scales gradients.

``auto`` picks bf16 on a GPU that supports it, fp16 (with a GradScaler) on one that does not,
bf16 on a CPU with native bf16 instructions and fp32 on any other CPU, where bf16 is emulated
and many times slower than fp32.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from polymodal.errors import ConfigError, did_you_mean

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 instructions that make bf16 fast
CPUINFO = Path("/proc/cpuinfo")  # read by torch versions without torch.cpu.get_capabilities


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``dtype`` None is plain fp32 (no autocast); ``scaler`` for fp16."""

    name: str
    dtype: torch.dtype | None
    scaler: bool = False

    def autocast(self, device: torch.device) -> AbstractContextManager[object]:
        """The context to run forward passes (and losses) in on ``device``."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        """A CUDA GradScaler for fp16, else None (bf16 and fp32 need no loss scaling)."""
        return torch.amp.GradScaler("cuda") if self.scaler else None


FP32 = Precision("fp32", None)
BF16 = Precision("bf16", torch.bfloat16)
FP16 = Precision("fp16", torch.float16, scaler=True)
FP16_UNSCALED = Precision("fp16", torch.float16)  # GradScaler("cuda") serves CUDA only


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 or AMX, the instructions that make bf16 matmuls fast."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # newer torch, any OS
    if capabilities is not None:
        found = capabilities()
        return any(found.get(flag) for flag in BF16_FLAGS)
    if not CPUINFO.is_file():  # an older torch off Linux: assume none
        return False
    lines = CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines()
    return any(line.startswith("flags") and BF16_FLAGS & set(line.split()) for line in lines)


def matmul_gflops(dtype: torch.dtype, size: int = 256, repeats: int = 3) -> float:
    """GFLOP/s of a ``size`` x ``size`` CPU matmul in ``dtype``: the best of ``repeats`` runs."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / max(best, 1e-9) / 1e9


def _slow_bf16_warning() -> str:
    bf16, fp32 = matmul_gflops(torch.bfloat16), matmul_gflops(torch.float32)
    return (
        "train.precision=bf16: this CPU has no native bf16 (AVX512-BF16/AMX); a matmul ran "
        f"{fp32 / bf16:.3g}x slower in bf16 ({bf16:.1f} vs {fp32:.1f} GFLOP/s) — use fp32 or auto"
    )


def resolve_precision(request: str, device: torch.device, warn: Callable[[str], None]) -> Precision:
    """The precision for ``train.precision=request`` on ``device``; ``warn`` hears of slow choices.

    >>> resolve_precision("fp32", torch.device("cpu"), print).dtype is None
    True
    """
    if request not in PRECISIONS:
        raise ConfigError(
            f"train.precision={request!r} is not one of {', '.join(PRECISIONS)}"
            + did_you_mean(request, PRECISIONS)
        )
    if request == "fp32":
        return FP32
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return FP16 if request == "fp16" else BF16
        if request == "bf16":
            raise ConfigError(
                "train.precision=bf16: this GPU does not support bf16; use fp16, fp32 or auto"
            )
        return FP16
    if device.type != "cpu":  # mps and others: auto stays safe, explicit requests are taken
        return {"auto": FP32, "bf16": BF16, "fp16": FP16_UNSCALED}[request]
    if request == "fp16":
        raise ConfigError(
            "train.precision=fp16 is not supported on CPU (CPU autocast in fp16 is slow and "
            "unreliable); use bf16 or fp32, or auto to pick for this machine"
        )
    if cpu_has_native_bf16():
        return BF16
    if request == "bf16":
        warn(_slow_bf16_warning())
        return BF16
    return FP32
