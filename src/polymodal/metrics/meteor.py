"""METEOR 1.5 through the jar that pycocoevalcap ships, one Java process per call.

The protocol is pycocoevalcap's meteor.py: ``java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en
-norm``, a ``SCORE ||| ref ||| ... ||| hypothesis`` line per image answered by its statistics,
then one ``EVAL ||| stats ||| ...`` line answered by each image's score and the corpus score.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

JAR_NAME = "meteor-1.5.jar"
STDERR_LIMIT = 4000  # characters of the JVM's error output kept for the message


class MeteorUnavailable(RuntimeError):
    """Java, the METEOR jar or the METEOR process is missing or failed; the message says why."""


def find_jar() -> Path:
    """The METEOR jar inside the installed pycocoevalcap package."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MeteorUnavailable("pycocoevalcap is not installed (pip install pycocoevalcap)")
    for location in spec.submodule_search_locations:
        jar = Path(location) / "meteor" / JAR_NAME
        if jar.is_file():
            return jar
    raise MeteorUnavailable(f"pycocoevalcap has no meteor/{JAR_NAME}")


class MeteorProcess:
    """A running METEOR jar; start it early, since the JVM and its tables take seconds to load.

    Use as a context manager; ``score`` may be called once or more.
    """

    def __init__(self, jar: Path | None = None) -> None:
        java = shutil.which("java")
        if java is None:
            raise MeteorUnavailable("java was not found on PATH")
        jar = find_jar() if jar is None else jar
        if not jar.is_file():
            raise MeteorUnavailable(f"METEOR jar {jar} does not exist")
        command = [java, "-jar", "-Xmx2G", jar.name, "-", "-", "-stdio", "-l", "en", "-norm"]
        try:
            self.process = subprocess.Popen(
                command,
                cwd=jar.parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as err:
            raise MeteorUnavailable(f"could not start java: {err}") from None
        self.errors: list[bytes] = []
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self) -> None:
        self.errors.append(self.process.stderr.read())  # type: ignore[union-attr]

    def score(
        self, references: Sequence[Sequence[str]], candidates: Sequence[str]
    ) -> tuple[float, list[float]]:
        """(corpus METEOR, per-image METEOR) of tokenized captions, in image order."""
        try:
            lines = [_score_line(c, refs) for c, refs in zip(candidates, references, strict=True)]
            stats = _exchange(self.process, lines, len(lines))
            answers = _exchange(self.process, ["EVAL ||| " + " ||| ".join(stats)], len(stats) + 1)
            values = [float(answer) for answer in answers]
        except (OSError, ValueError) as err:
            self.close()
            self.drain.join(timeout=5)
            detail = b"".join(self.errors).decode("utf-8", "replace").strip()[-STDERR_LIMIT:]
            said = f"; java said: {detail}" if detail else ""
            raise MeteorUnavailable(f"METEOR failed: {err}{said}") from None
        return values[-1], values[:-1]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> MeteorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def meteor_scores(
    references: Sequence[Sequence[str]], candidates: Sequence[str], jar: Path | None = None
) -> tuple[float, list[float]]:
    """(corpus METEOR, per-image METEOR) of tokenized captions, in image order."""
    with MeteorProcess(jar) as meteor:
        return meteor.score(references, candidates)


def _score_line(candidate: str, references: Sequence[str]) -> str:
    # pycocoevalcap cleans only the hypothesis: no "|||", single spaces.
    hypothesis = candidate.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))


def _exchange(process: subprocess.Popen[bytes], lines: list[str], answers: int) -> list[str]:
    """Send lines (from a thread, so that full pipes cannot block) and read the answers."""
    payload = "".join(line + "\n" for line in lines).encode()
    failure: list[OSError] = []

    def write() -> None:
        try:
            process.stdin.write(payload)  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        except OSError as err:
            failure.append(err)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    out = []
    for _ in range(answers):
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            writer.join(timeout=5)
            raise OSError(f"the METEOR process stopped after {len(out)} of {answers} answers")
        out.append(line.decode().strip())
    writer.join()
    if failure:
        raise failure[0]
    return out
