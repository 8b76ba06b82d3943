from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import polymodal
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


def test_each_problem_names_the_file_or_the_set_that_caused_it(tmp_path: Path):
    path = write(tmp_path, {**BASE, "train": {"lr": "fast"}})
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.epochs=abc", "train.epoch=3", "seed=1"])
    lines = str(err.value).splitlines()
    assert lines[0] == "the config has 3 problems:"
    assert f"  {path}: 'train.lr': Input should be a valid number" in "\n".join(lines)
    assert any(
        line.startswith("  --set train.epochs=abc: 'train.epochs': Input should be a valid integer")
        for line in lines
    )
    assert "  --set train.epoch=3: unknown key 'train.epoch'; did you mean 'epochs'?" in (
        "\n".join(lines)
    )
    assert "seed=1" not in str(err.value)


@pytest.mark.parametrize(
    "override,message",
    [  # a key the --set wrote, one inside a section it wrote, the section holding it
        ("train.epochs=abc", "--set train.epochs=abc: 'train.epochs': Input should be"),
        ("train={epochs: 0}", "--set train={epochs: 0}: 'train.epochs': Input should be greater"),
        ("model.tasks.0.type=clasify", "--set model.tasks.0.type=clasify: 'model.tasks.0': "),
        ("train.epoch=3", "--set train.epoch=3: unknown key 'train.epoch'; did you mean 'epochs'?"),
    ],
)
def test_a_set_error_blames_the_set_not_the_file(tmp_path: Path, override, message):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert str(err.value).startswith(message)
    assert str(path) not in str(err.value)


def test_a_set_value_that_is_not_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"--set seed=\[1: the value is not valid YAML"):
        load_config(write(tmp_path, BASE), ["seed=[1"])


def test_yaml_booleans_in_a_string_say_to_quote_them(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "name: yes\n"
        "data:\n"
        "  manifest: m.jsonl\n"
        "  fields:\n"
        "    label: {kind: label, role: target, labels: [Off, 'no', true]}\n"
        "model: {tasks: [{type: classify, target: label}]}\n"
    )
    hint = "Input should be a valid string; YAML reads unquoted yes/no/on/off/true/false as "
    hint += "booleans; quote it"
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}: 'name': {hint}: 'yes'" in message
    assert f"{path}: 'data.fields.label.labels.0': {hint}: 'Off'" in message
    assert f"{path}: 'data.fields.label.labels.2': {hint}: 'true'" in message
    assert "labels.1" not in message  # quoted: a string
    with pytest.raises(ConfigError) as err:
        load_config(path, ["name=run", "data.fields.label.labels=[a, ON]"])
    assert str(err.value) == (
        f"--set data.fields.label.labels=[a, ON]: 'data.fields.label.labels.1': {hint}: 'ON'"
    )
    with pytest.raises(ConfigError, match=f"'name': {hint}$"):
        validate({**BASE, "name": True})  # no YAML text: the word is unknown


def test_paths_in_the_file_are_relative_to_it(tmp_path: Path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    conf = tmp_path / "conf"
    path = write(tmp_path, {**BASE, "train": {"out_dir": "out"}})
    config = load_config(path)
    assert config.train.out_dir == conf / "out"
    assert config.run_dir == conf / "out" / "run"
    assert config.data.manifest == conf / "data" / "m.jsonl"
    given = load_config(path, ["train.out_dir=mine", "data.manifest=m.jsonl"])
    assert (given.train.out_dir, given.data.manifest) == (cwd / "mine", cwd / "m.jsonl")
    assert load_config(write(tmp_path, BASE)).train.out_dir == cwd / "runs"  # the default


@pytest.mark.parametrize("name", ["shapeworld_retrieval", "shapeworld_statement"])
def test_packaged_configs_write_runs_in_the_working_directory(tmp_path: Path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    packaged = Path(polymodal.__file__).parent / "configs" / f"{name}.yaml"
    assert load_config(packaged).run_dir == tmp_path / "runs" / name


def test_dump_keeps_nulls(tmp_path: Path):
    config = load_config(write(tmp_path, BASE), ["train.grad_clip=null"])
    dumped = yaml.safe_load(dump_config(config))
    assert dumped["train"]["grad_clip"] is None and dumped["data"]["fields"] is None
    assert validate(dumped) == config


def test_a_dumped_config_names_the_same_files_from_anywhere(tmp_path: Path, monkeypatch):
    """A config built in code may hold cwd-relative paths; its dump (a run's config.yaml) is
    read relative to the file, so the dump writes them absolute."""
    monkeypatch.chdir(tmp_path)
    config = validate({**BASE, "train": {"out_dir": "out"}})
    saved = tmp_path / "out" / "run" / "config.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text(dump_config(config))
    loaded = load_config(saved)
    assert loaded.data.manifest == tmp_path / "data" / "m.jsonl"
    assert loaded.run_dir == tmp_path / "out" / "run"
    assert config.data.manifest == Path("data/m.jsonl")  # the config itself is left as it was
