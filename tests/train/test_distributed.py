"""DDP helpers: single-process behaviour in-process, 2-rank gloo behaviour in subprocesses.

A 2-rank test runs this file as a script once per rank (``python test_distributed.py CASE``
with torchrun's environment); the script runs ``CASES[CASE]`` and exits non-zero on failure.
Every rank rebuilds the same data and modules from one seed, and checks itself against a
single-process reference over the whole batch.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
from torch.testing import assert_close

from polymodal.errors import ConfigError
from polymodal.losses import info_nce, info_nce_gathered
from polymodal.train.distributed import (
    DistContext,
    all_gather_with_grad,
    barrier,
    broadcast_object,
    gather_variable,
    init_distributed,
    shutdown_distributed,
)

WORLD = 2
ROWS = 4  # per rank
EXACT = {"atol": 1e-6, "rtol": 0.0}
DTYPE = torch.float64  # checks the algebra, not float32 rounding (~5e-7 on gradients ~10)
CASES: dict[str, Callable[[DistContext], None]] = {}


def case(worker: Callable[[DistContext], None]) -> Callable[[DistContext], None]:
    CASES[worker.__name__] = worker
    return worker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(name: str, timeout: float = 60.0) -> None:
    """Run case ``name`` on ``WORLD`` gloo ranks; fail with a rank's output if any fails."""
    port = str(free_port())
    procs = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, name],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        outputs = [proc.communicate(timeout=timeout)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} of {name} failed:\n{output}"


def mean_grads(module: torch.nn.Module) -> list[torch.Tensor]:
    """Each parameter's gradient averaged over ranks, as DDP does."""
    grads = []
    for param in module.parameters():
        assert param.grad is not None
        grad = param.grad.clone()
        dist.all_reduce(grad)
        grads.append(grad / WORLD)
    return grads


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / WORLD


def local_rows(tensor: torch.Tensor, rank: int) -> torch.Tensor:
    return tensor[rank * ROWS : (rank + 1) * ROWS]


@case
def gather_grad(ctx: DistContext) -> None:
    torch.manual_seed(0)
    data = torch.randn(WORLD * ROWS, 5, dtype=DTYPE)
    proj = torch.nn.Linear(5, 3, dtype=DTYPE)
    reference = copy.deepcopy(proj)

    inputs = local_rows(data, ctx.rank).clone().requires_grad_()
    local = proj(inputs)
    gathered = all_gather_with_grad(local)
    loss = torch.logsumexp(local @ gathered.T, dim=1).mean()  # a local mean, like a real loss
    loss.backward()

    all_inputs = data.clone().requires_grad_()
    everything = reference(all_inputs)
    ref_loss = torch.logsumexp(everything @ everything.T, dim=1).mean()
    ref_loss.backward()

    assert_close(gathered, everything, **EXACT)
    assert_close(mean_over_ranks(loss), ref_loss.detach(), **EXACT)
    for grad, ref in zip(mean_grads(proj), reference.parameters(), strict=True):
        assert_close(grad, ref.grad, **EXACT)
    # the rank's own rows receive the gradient of the sum of all ranks' losses
    assert_close(inputs.grad, WORLD * local_rows(all_inputs.grad, ctx.rank), **EXACT)


class Tower(torch.nn.Module):
    """Query and gallery projections with a learnable temperature."""

    def __init__(self) -> None:
        super().__init__()
        self.query = torch.nn.Linear(6, 4)
        self.gallery = torch.nn.Linear(5, 4)
        self.log_scale = torch.nn.Parameter(torch.tensor(1 / 0.07).log())

    def forward(self, query: torch.Tensor, gallery: torch.Tensor, loss: Callable) -> torch.Tensor:
        return loss(self.query(query), self.gallery(gallery), self.log_scale.exp())


@case
def gathered_info_nce(ctx: DistContext) -> None:
    torch.manual_seed(0)
    queries = torch.randn(WORLD * ROWS, 6, dtype=DTYPE)
    galleries = torch.randn(WORLD * ROWS, 5, dtype=DTYPE)
    tower = Tower().to(DTYPE)
    reference = copy.deepcopy(tower)

    rank_queries, rank_galleries = local_rows(queries, ctx.rank), local_rows(galleries, ctx.rank)
    loss = tower(rank_queries, rank_galleries, info_nce_gathered)
    loss.backward()
    ref_loss = reference(queries, galleries, info_nce)
    ref_loss.backward()

    assert_close(mean_over_ranks(loss), ref_loss.detach(), **EXACT)
    for grad, ref in zip(mean_grads(tower), reference.parameters(), strict=True):
        assert_close(grad, ref.grad, **EXACT)


def rank_rows(size: int, rank: int, dtype: torch.dtype) -> torch.Tensor:
    """``size`` rows of 2 values that differ per rank (bool: every third value True)."""
    values = torch.arange(size * 2).reshape(size, 2) + 10 * rank
    return values % 3 == 0 if dtype == torch.bool else values.to(dtype)


@case
def variable_rows_and_helpers(ctx: DistContext) -> None:
    assert (ctx.rank, ctx.world_size, ctx.device) == (
        int(os.environ["RANK"]),
        2,
        torch.device("cpu"),
    )
    assert ctx.enabled and ctx.is_main == (ctx.rank == 0)
    assert dist.get_backend() == "gloo"
    assert init_distributed("cpu") == ctx  # initialising again keeps the group

    for sizes in [(3, 0), (2, 5)]:
        for dtype in (torch.float32, torch.int64, torch.bool):
            per_rank = [rank_rows(size, rank, dtype) for rank, size in enumerate(sizes)]
            gathered = gather_variable(per_rank[ctx.rank])
            assert gathered.dtype == dtype
            assert torch.equal(gathered, torch.cat(per_rank)), (sizes, dtype, gathered)
    assert torch.equal(gather_variable(torch.arange(ctx.rank * 3)), torch.arange(3))

    assert broadcast_object({"from": ctx.rank}) == {"from": 0}
    assert broadcast_object(f"rank {ctx.rank}", src=1) == "rank 1"
    barrier()


def test_all_gather_with_grad_matches_one_process():
    run_ranks("gather_grad")


def test_info_nce_gathered_matches_global_batch_info_nce():
    run_ranks("gathered_info_nce")


def test_gather_variable_broadcast_and_barrier_over_two_ranks():
    run_ranks("variable_rows_and_helpers")


@pytest.fixture
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_init_distributed_single_process(single_process, monkeypatch):
    ctx = init_distributed("cpu")
    assert ctx == DistContext(0, 1, 0, torch.device("cpu"))
    assert ctx.is_main and not ctx.enabled
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert init_distributed().device == torch.device("cpu")
    assert not dist.is_initialized()
    with pytest.raises(ConfigError, match="CUDA is not available"):
        init_distributed("cuda")
    with pytest.raises(ConfigError, match="'gpu' is not one of"):
        init_distributed("gpu")
    shutdown_distributed()  # nothing to destroy: a no-op


def test_bad_torchrun_environment_is_a_config_error(single_process, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        init_distributed("cpu")


def test_helpers_are_identities_in_one_process():
    torch.manual_seed(0)
    query, gallery = torch.randn(5, 4), torch.randn(5, 4)
    scale = torch.tensor(10.0)
    assert torch.equal(info_nce_gathered(query, gallery, scale), info_nce(query, gallery, scale))
    assert all_gather_with_grad(query) is query
    rows = torch.tensor([True, False])
    assert torch.equal(gather_variable(rows), rows)
    assert broadcast_object([1, 2]) == [1, 2]
    barrier()


if __name__ == "__main__":
    context = init_distributed("cpu")
    try:
        CASES[sys.argv[1]](context)
    finally:
        shutdown_distributed()
