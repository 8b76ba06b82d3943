"""The driving example: the decision from camera + track + road condition, and from every pair.

Generates ``polymodal data generate driving`` data, trains the packaged ``driving`` config (the
classic CNN + LSTM + dense, concatenated) on all three modalities and on each pair, then the
other fusions named by ``--fusions`` on all three; every model gets the same epochs. Beside each
pair stands the best accuracy any model on it can reach (``bayes_accuracy``, from the rule).

    python benchmarks/example_driving.py [--rows 8000] [--fusions gated,graph] [--work DIR]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from study import Study, add_study_options, markdown

from polymodal.data.driving import bayes_accuracy, generate

INPUTS = {"camera": "camera", "track": "track", "road": "road"}  # field -> generator modality
TASK = "classify_decision"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fusions", default="gated,low_rank_tensor,graph")
    parser.add_argument("--work", type=Path, default=None)
    add_study_options(parser)
    args = parser.parse_args()
    Study.configure(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        manifest = generate(work / "driving", n=args.rows, seed=args.seed)
        study = Study("driving", manifest, work, seed=args.seed)
        fields = list(INPUTS)
        rows = []
        for inputs in [fields, *itertools.combinations(fields, 2)]:
            run = study.train(study.config("_".join(inputs), inputs=inputs))
            result = study.results[run.run_dir.name]
            bayes = bayes_accuracy(INPUTS[f] for f in inputs)
            rows.append(
                [
                    " + ".join(inputs),
                    "concat",
                    result["test"][TASK]["accuracy"],
                    bayes,
                    f"{result['train_seconds']:.0f}",
                ]
            )
        for fusion in filter(None, args.fusions.split(",")):
            run = study.train(study.config(f"all_{fusion}", fusion=fusion))
            result = study.results[run.run_dir.name]
            accuracy = result["test"][TASK]["accuracy"]
            rows.append(
                [" + ".join(fields), fusion, accuracy, 1.0, f"{result['train_seconds']:.0f}"]
            )
        header = ["inputs", "fusion", "test accuracy", "best possible", "train seconds"]
        pairs = {
            " + ".join(p): bayes_accuracy(INPUTS[f] for f in p)
            for p in itertools.combinations(fields, 2)
        }
        study.write(
            "driving",
            markdown(header, rows),
            {"rows": args.rows, "seed": args.seed, "bayes_accuracy": pairs},
        )


if __name__ == "__main__":
    main()
