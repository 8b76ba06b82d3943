"""The caption task: trained for a few steps on tiny images, saved, reloaded, predicting; its
loss over one or all references, its metrics against every reference, its config errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from polymodal.config import validate
from polymodal.data.pipeline import prepare_data
from polymodal.errors import ConfigError
from polymodal.evaluate.report import write_report
from polymodal.inference import eval_mode
from polymodal.models.model import MultimodalModel, build_model
from polymodal.predictor import Predictor
from polymodal.tasks import Caption
from polymodal.train.run import RunResult, run_training

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
CAPTIONS = {"red": ["a red square", "a red box"], "blue": "a blue square"}


def write_manifest(folder: Path) -> Path:
    """24 one-colour images; red ones carry two references, blue ones one."""
    from PIL import Image

    rows = []
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        (folder / "img").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), COLOURS[colour]).save(folder / "img" / f"{i}.png")
        split = "train" if i < 16 else ("val" if i < 20 else "test")
        rows.append({"split": split, "image": f"img/{i}.png", "caption": CAPTIONS[colour]})
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def config(manifest: Path, out: Path, fields: bool = True, **task: Any) -> Any:
    data: dict[str, Any] = {"manifest": str(manifest), "image": {"size": 16}}
    if fields:
        data["fields"] = {"image": {"kind": "image"}, "caption": {"kind": "text", "role": "target"}}
    return validate(
        {
            "name": "caption",
            "seed": 0,
            "data": data,
            "model": {
                "inputs": ["image"],
                "encoders": {"image": {"type": "cnn", "dim": 16, "channels": [8, 16]}},
                "tasks": [
                    {
                        "type": "caption",
                        "image": "image",
                        "target": "caption",
                        "dim": 32,
                        "layers": 1,
                        "heads": 2,
                        "dropout": 0.0,
                        "max_length": 6,
                        **task,
                    }
                ],
            },
            "train": {"epochs": 12, "batch_size": 4, "lr": 0.01, "out_dir": str(out)},
        }
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    root = tmp_path_factory.mktemp("caption_run")
    manifest = write_manifest(root / "data")
    return run_training(config(manifest, root / "runs"), log=lambda m: None)


def test_training_reports_the_coco_caption_metrics(run: RunResult) -> None:
    scores = run.test["caption_caption"]
    assert {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"} <= set(scores)
    assert "METEOR" not in scores  # not asked for
    assert scores["rows"] == 4
    assert scores["Bleu_1"] > 0.9  # the colour is all there is to learn


def test_the_reloaded_model_captions_images_by_colour(run: RunResult) -> None:
    predictor = Predictor.from_pretrained(run.model_dir)
    base = run.data.index.base_dir
    rows = [{"image": "img/20.png"}, {"image": "img/21.png"}]
    first, second = (p["caption_caption"] for p in predictor.predict(rows, base))
    assert first["caption"] in CAPTIONS["red"]
    assert second["caption"] == CAPTIONS["blue"]
    assert first["score"] < 0  # a length-penalised log-probability
    again = Predictor(MultimodalModel.from_pretrained(run.model_dir)).predict(rows, base)
    assert again[0]["caption_caption"] == first


def test_the_report_shows_generated_texts_beside_the_references(run: RunResult) -> None:
    page = write_report(run.run_dir, resamples=10).read_text(encoding="utf-8")
    assert "Generated caption beside the references" in page
    assert "<li>a red box</li>" in page and "<li>a blue square</li>" in page


def model_and_batch(run: RunResult, **task: Any) -> tuple[MultimodalModel, Caption, Any]:
    cfg = config(run.data.index.path, run.run_dir.parent, **task)
    model = build_model(cfg.model, run.data.preprocessor)
    rows = [run.data.splits["train"][i] for i in range(4)]
    return model, model.tasks["caption_caption"], run.data.preprocessor.collate(rows)


def test_training_reads_one_reference_per_row_or_all(run: RunResult) -> None:
    read = {}
    for references in ("random", "all"):
        model, task, batch = model_and_batch(run, references=references)
        seen: list[torch.Tensor] = []
        task.decoder.register_forward_pre_hook(lambda _, args, seen=seen: seen.append(args[0]))
        assert torch.isfinite(model.loss(batch)[0])
        read[references] = len(seen[0])
    assert read == {"random": 4, "all": 6}  # two red rows of two references, two blue of one


def test_rows_without_an_image_are_left_out(run: RunResult) -> None:
    model, task, batch = model_and_batch(run)
    batch.present["image"][:] = False
    assert float(model.loss(batch)[0].detach()) == 0.0
    with eval_mode(model):
        outputs = model(batch)["caption_caption"]
    assert not len(task.collect(outputs, batch)["tokens"])


def test_metrics_score_against_every_reference(run: RunResult) -> None:
    _, task, _ = model_and_batch(run)
    ids = task.text.vocab.ids
    red_box = [ids["a"], ids["red"], ids["box"], 0, 0, 0]
    references = b"a red square\na red box"
    collected = {
        "tokens": torch.tensor([red_box]),
        "lengths": torch.tensor([3]),
        "scores": torch.tensor([-0.1]),
        "references": torch.tensor([list(references)], dtype=torch.uint8),
        "reference_lengths": torch.tensor([len(references)]),
    }
    assert task.captions(collected) == ["a red box"]
    assert task.references(collected) == [["a red square", "a red box"]]
    assert task.metrics(collected)["Bleu_1"] == pytest.approx(1.0)


def test_an_inferred_schema_makes_the_caption_a_text_target(run: RunResult) -> None:
    cfg = config(run.data.index.path, run.run_dir.parent, fields=False)
    data = prepare_data(cfg.data, targets={"caption": "text"})
    spec = data.schema.fields["caption"]
    assert (spec.kind, spec.role) == ("text", "target")
    assert isinstance(build_model(cfg.model, data.preprocessor).tasks["caption_caption"], Caption)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"caption": {"kind": "text"}}, "text field 'caption' is an input"),
        ({"caption": {"kind": "label", "role": "target"}}, "expected text"),
    ],
)
def test_a_caption_of_the_wrong_field_is_a_config_error(
    run: RunResult, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    cfg = config(run.data.index.path, tmp_path)
    cfg.data.fields = {**cfg.data.fields, **validate_fields(change)}
    data = prepare_data(cfg.data)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg.model, data.preprocessor)


def validate_fields(fields: dict[str, Any]) -> dict[str, Any]:
    from polymodal.config import FieldSpec

    return {name: FieldSpec.model_validate(spec) for name, spec in fields.items()}


def test_the_packaged_shapeworld_config_reads_the_captioning_view(tmp_path: Path) -> None:
    import polymodal
    from polymodal.config import load_config
    from polymodal.data.shapeworld import generate

    generate(tmp_path / "sw", 20)
    packaged = Path(polymodal.__file__).parent / "configs" / "shapeworld_caption.yaml"
    cfg = load_config(packaged, [f"data.manifest={tmp_path / 'sw' / 'captions.jsonl'}"])
    data = prepare_data(cfg.data)
    model = build_model(cfg.model, data.preprocessor)
    batch = data.preprocessor.collate([data.splits["train"][i] for i in range(4)])
    task = model.tasks["caption_captions"]
    references = task.text.references(batch.values["captions"], batch.lengths["captions"])
    assert [len(texts) for texts in references] == [4] * 4  # every wording of each caption
    assert torch.isfinite(model.loss(batch)[0])
