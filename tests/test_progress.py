"""Progress: plain lines every few seconds when stderr is not a terminal, none when quiet."""

from __future__ import annotations

import io

from polymodal import progress


class Clock:
    """A fake monotonic clock that moves ``step`` seconds per reading."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def run(monkeypatch, *, tty: bool, quiet: bool = False, ci: str = "") -> str:
    stderr = io.StringIO()
    stderr.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr(progress.sys, "stderr", stderr)
    monkeypatch.setattr(progress.time, "monotonic", Clock(4.0))
    monkeypatch.setattr(progress, "_quiet", quiet)
    monkeypatch.setenv("CI", ci)
    assert list(progress.progress_bar(range(10), "epoch 1/3")) == list(range(10))
    return stderr.getvalue()


def test_plain_lines_when_stderr_is_not_a_terminal(monkeypatch):
    lines = run(monkeypatch, tty=False).splitlines()
    # 4 s per step: a line at most every 10 s
    assert lines[0] == "epoch 1/3: 3/10 (30%), 12 s elapsed, ~28 s left"
    assert len(lines) == 3 and lines[-1].startswith("epoch 1/3: 9/10 (90%)")


def test_unknown_length_lines_have_no_total(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stderr)
    monkeypatch.setattr(progress.time, "monotonic", Clock(6.0))
    assert list(progress.plain_progress(iter(range(3)), "reading")) == [0, 1, 2]
    assert stderr.getvalue() == "reading: 2, 12 s elapsed\n"


def test_quiet_and_ci_print_nothing(monkeypatch):
    assert run(monkeypatch, tty=False, quiet=True) == ""
    assert run(monkeypatch, tty=False, ci="true") == ""
