from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from polymodal.errors import ConfigError
from polymodal.train import precision
from polymodal.train.precision import resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def resolve(request: str, device: torch.device = CPU) -> tuple[precision.Precision, list[str]]:
    warnings: list[str] = []
    return resolve_precision(request, device, warnings.append), warnings


@pytest.fixture
def no_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


def test_auto_on_a_cpu_without_native_bf16_is_fp32(no_native_bf16: None) -> None:
    chosen, warnings = resolve("auto")
    assert (chosen.name, chosen.dtype, chosen.scaler, warnings) == ("fp32", None, False, [])


def test_auto_on_a_cpu_with_native_bf16_is_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    chosen, warnings = resolve("auto")
    assert (chosen.name, chosen.dtype, chosen.scaler, warnings) == (
        "bf16",
        torch.bfloat16,
        False,
        [],
    )
    assert resolve("bf16") == (chosen, [])


def test_fp32_is_fp32_everywhere() -> None:
    assert resolve("fp32")[0].dtype is None
    assert resolve("fp32", CUDA)[0].dtype is None


def test_bf16_without_native_support_warns_with_measured_numbers(
    no_native_bf16: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    speeds = {torch.bfloat16: 2.1, torch.float32: 84.0}
    monkeypatch.setattr(precision, "matmul_gflops", lambda dtype: speeds[dtype])
    chosen, warnings = resolve("bf16")
    assert chosen.dtype == torch.bfloat16
    assert len(warnings) == 1
    assert "40x slower in bf16 (2.1 vs 84.0 GFLOP/s)" in warnings[0]
    assert "no native bf16" in warnings[0] and "use fp32 or auto" in warnings[0]


def test_the_warning_times_a_real_matmul(no_native_bf16: None) -> None:
    warnings = resolve("bf16")[1]
    assert re.search(r"\d+x slower in bf16 \([\d.]+ vs [\d.]+ GFLOP/s\)", warnings[0])


def test_matmul_gflops_is_positive_and_quick() -> None:
    assert precision.matmul_gflops(torch.float32, size=64, repeats=2) > 0


def test_fp16_on_cpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"fp16 is not supported on CPU.*bf16 or fp32"):
        resolve("fp16")


def test_an_unknown_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="did you mean 'bf16'"):
        resolve("bf61")


def test_cpu_bf16_autocast_makes_linear_output_bf16() -> None:
    layer = torch.nn.Linear(4, 3)
    with precision.BF16.autocast(CPU):
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16


def test_fp32_autocast_is_a_no_op() -> None:
    layer = torch.nn.Linear(4, 3)
    with precision.FP32.autocast(CPU):
        assert not torch.is_autocast_enabled("cpu")
        out = layer(torch.randn(2, 4))
    assert out.dtype == torch.float32
    assert precision.FP32.make_scaler() is None


def test_cuda_auto_prefers_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    chosen, warnings = resolve("auto", CUDA)
    assert (chosen.dtype, chosen.scaler, warnings) == (torch.bfloat16, False, [])
    assert resolve("fp16", CUDA)[0] == precision.FP16


def test_cuda_without_bf16_uses_scaled_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    chosen = resolve("auto", CUDA)[0]
    assert (chosen.name, chosen.dtype, chosen.scaler) == ("fp16", torch.float16, True)
    assert resolve("fp16", CUDA)[0] == chosen
    with pytest.raises(ConfigError, match="GPU does not support bf16"):
        resolve("bf16", CUDA)


@pytest.mark.filterwarnings("ignore:.*CUDA is not available")  # a CPU-only torch disables it
def test_fp16_makes_a_cuda_grad_scaler() -> None:
    assert isinstance(precision.FP16.make_scaler(), torch.amp.GradScaler)
    assert precision.BF16.make_scaler() is None


def test_other_devices_keep_auto_fp32_and_drop_the_scaler() -> None:
    mps = torch.device("mps")
    assert resolve("auto", mps)[0] == precision.FP32
    assert resolve("fp16", mps)[0].scaler is False


def test_cpu_has_native_bf16_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True}, raising=False)
    assert precision.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True}, raising=False)
    assert precision.cpu_has_native_bf16() is True


def test_without_get_capabilities_the_proc_flags_decide(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    assert precision.cpu_has_native_bf16() is False  # no file: not Linux
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n", encoding="utf-8")
    assert precision.cpu_has_native_bf16() is False
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n", encoding="utf-8")
    assert precision.cpu_has_native_bf16() is True
