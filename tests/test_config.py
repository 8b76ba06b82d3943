from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polymodal.config import dump_config, load_config, validate
from polymodal.errors import ConfigError

BASE = {
    "data": {"manifest": "data/m.jsonl"},
    "model": {"tasks": [{"type": "classify", "target": "label"}]},
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "conf" / "run.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_relative_manifest(tmp_path: Path):
    config = load_config(write(tmp_path, BASE))
    assert config.data.manifest == (tmp_path / "conf" / "data" / "m.jsonl").resolve()
    assert config.train.epochs == 10 and config.model.fusion.type == "concat"
    assert validate(yaml.safe_load(dump_config(config))) == config  # dump -> load round trip


@pytest.mark.parametrize(
    "change,message",
    [
        ({"trian": {}}, "unknown key 'trian'; did you mean 'train'?"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch'; did you mean 'epochs'?"),
        (
            {"model": {"tasks": [{"type": "classify", "target": "label", "hiden": 8}]}},
            "unknown key 'model.tasks.0.hiden'; did you mean 'hidden'?",
        ),
        (
            {
                "model": {
                    "tasks": [{"type": "classify", "target": "y"}],
                    "encoders": {"image": {"type": "cnn", "chanels": [8]}},
                }
            },
            "unknown key 'model.encoders.image.chanels'; did you mean 'channels'?",
        ),
        ({"train": {"lr": "fast"}}, "'train.lr': Input should be a valid number"),
        ({"model": {"tasks": [{"type": "clasify", "target": "y"}]}}, "'classify', 'retrieve'"),
    ],
)
def test_config_errors_name_the_key(change, message):
    with pytest.raises(ConfigError) as err:
        validate({**BASE, **change})
    assert message in str(err.value)


def test_overrides_are_type_checked(tmp_path: Path):
    path = write(tmp_path, BASE)
    config = load_config(
        path,
        ["train.epochs=3", "model.tasks.0.hidden=32", "seed=7", "data.manifest=elsewhere.jsonl"],
    )
    assert (config.train.epochs, config.model.tasks[0].hidden, config.seed) == (3, 32, 7)
    assert config.data.manifest == Path("elsewhere.jsonl").resolve()  # relative to the cwd
    with pytest.raises(ConfigError, match=r"'train\.epochs': Input should be a valid integer"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(path, ["train.batchsize=8"])
    with pytest.raises(ConfigError, match=r"expected key\.path=value"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="not an index"):
        load_config(path, ["model.tasks.3.hidden=2"])


def test_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
