"""The voice commands example: the command from the audio alone, audio <-> text retrieval, and
Whisper tiny.en transcription scored by word error rate.

Generates ``polymodal data generate voice_commands`` clips (speech from flite / espeak-ng),
trains the packaged ``voice_commands`` config (a log-mel CNN), then an audio <-> transcript
dual encoder. Retrieval is scored against the distinct transcripts of the test split (many
clips say the same words, so a clip's match is the text it says, not one row): R@1 is the share
of test clips whose nearest transcript is the one spoken. Whisper transcribes the first
``--whisper-clips`` test clips (``polymodal data transcribe``'s function) and its WER is
taken against the transcripts.

    python benchmarks/example_voice_commands.py [--rows 4800] [--whisper-clips 300] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from study import Study, add_study_options, markdown

from polymodal.config import FieldSpec, RetrieveConfig, TransformerEncoderConfig
from polymodal.data.transcribe import transcribe_manifest
from polymodal.data.voice_commands import generate
from polymodal.predictor import Predictor


def retrieval_accuracy(model_dir: Path, test: list[dict], base_dir: Path) -> dict[str, float]:
    """Audio -> text R@1 and R@5 over the distinct test transcripts, text -> audio R@1 over
    the clips (a hit is any clip saying that text)."""
    predictor = Predictor.from_pretrained(model_dir)
    texts = sorted({row["transcript"] for row in test})
    audio = torch.tensor(
        [
            p["retrieve_audio_transcript"]["audio_embedding"]
            for p in predictor.predict([{"audio": row["audio"]} for row in test], base_dir)
        ]
    )
    text = torch.tensor(
        [
            p["retrieve_audio_transcript"]["transcript_embedding"]
            for p in predictor.predict([{"transcript": t} for t in texts], base_dir)
        ]
    )
    truth = torch.tensor([texts.index(row["transcript"]) for row in test])
    ranked = (audio @ text.T).argsort(dim=1, descending=True)
    said = (ranked == truth[:, None]).float()
    nearest_clip = (text @ audio.T).argmax(dim=1)
    return {
        "audio_to_text_R@1": float(said[:, :1].sum(1).mean()),
        "audio_to_text_R@5": float(said[:, :5].sum(1).mean()),
        "text_to_audio_R@1": float(
            (truth[nearest_clip] == torch.arange(len(texts))).float().mean()
        ),
        "distinct_texts": len(texts),
        "clips": len(test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4800)
    parser.add_argument("--whisper-clips", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    add_study_options(parser)
    args = parser.parse_args()
    Study.configure(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        manifest = work / "voice_commands" / "manifest.jsonl"
        if not manifest.is_file():
            manifest = generate(work / "voice_commands", n=args.rows, seed=args.seed)
        study = Study("voice_commands", manifest, work, seed=args.seed)
        run = study.train(study.config("command_from_audio"))
        command = study.results[run.run_dir.name]["test"]["classify_command"]

        rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
        test = [row for row in rows if row["split"] == "test"]
        retrieval = study.config("audio_transcript")
        retrieval.data.fields["transcript"] = FieldSpec(kind="text")
        retrieval.model.inputs = ["audio", "transcript"]
        retrieval.model.encoders["transcript"] = TransformerEncoderConfig()
        retrieval.model.tasks = [RetrieveConfig(query="audio", gallery="transcript")]
        retrieval_run = study.train(retrieval)
        recall = retrieval_accuracy(retrieval_run.model_dir, test, manifest.parent)

        test_manifest = manifest.parent / "whisper_test.jsonl"  # audio paths stay relative
        test_manifest.write_text(
            "".join(json.dumps(row) + "\n" for row in test[: args.whisper_clips]), encoding="utf-8"
        )
        whisper = transcribe_manifest(
            test_manifest, "audio", work / "whisper.jsonl", "whisper", reference="transcript"
        )
        if whisper.failed:
            first = whisper.failed[0]
            raise SystemExit(f"{len(whisper.failed)} clips not transcribed: {first.detail}")
        table = markdown(
            ["what", "score"],
            [
                ["command accuracy (audio alone)", command["accuracy"]],
                ["command f1_macro", command["f1_macro"]],
                ["audio -> text R@1 (distinct transcripts)", recall["audio_to_text_R@1"]],
                ["audio -> text R@5", recall["audio_to_text_R@5"]],
                ["text -> audio R@1", recall["text_to_audio_R@1"]],
                ["Whisper tiny.en WER", whisper.wer],
                ["Whisper seconds per clip", whisper.seconds / max(1, whisper.transcribed)],
            ],
        )
        study.write(
            "voice_commands",
            table,
            {
                "rows": args.rows,
                "retrieval": recall,
                "whisper": {
                    "wer": whisper.wer,
                    "clips": whisper.scored,
                    "seconds": whisper.seconds,
                },
            },
        )


if __name__ == "__main__":
    main()
