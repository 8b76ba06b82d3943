from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from polymodal.data.inspection import inspect_manifest, render_inspection
from polymodal.errors import DataError


def quarantined_lines(report: dict) -> dict[int, tuple[str, str]]:
    """line -> (reason, field) from the report's quarantine summary."""
    return {
        ex["line"]: (reason, ex["field"])
        for reason, info in report["quarantine"].items()
        for ex in info["examples"]
    }


def write_config(bad_manifest, tmp_path: Path, strict: bool = False) -> Path:
    config = {
        "data": {
            "manifest": bad_manifest.path.name,
            "strict": strict,
            "fields": {
                "image": {"kind": "image"},
                "caption": {"kind": "text"},
                "label": {"kind": "label", "role": "target", "labels": list(bad_manifest.labels)},
            },
        },
        "model": {"tasks": [{"type": "classify", "target": "label"}]},
    }
    path = tmp_path / ("strict.yaml" if strict else "config.yaml")
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def report(bad_manifest) -> dict:
    return inspect_manifest(bad_manifest.path, labels=" red, blue ")


def test_bad_rows_are_quarantined_with_reason_line_and_field(bad_manifest, report):
    assert quarantined_lines(report) == bad_manifest.quarantined
    assert {reason: info["count"] for reason, info in report["quarantine"].items()} == {
        "unreadable image": 1,
        "missing image file": 1,
        "unknown label": 1,
    }
    examples = {ex["line"]: ex for info in report["quarantine"].values() for ex in info["examples"]}
    assert all(ex["source"] == str(bad_manifest.path) for ex in examples.values())
    assert "truncated" in examples[3]["detail"]
    assert str(bad_manifest.path.parent / "img" / "missing.png") in examples[9]["detail"]
    assert "'green'" in examples[11]["detail"]


def test_good_rows_load_and_are_counted(bad_manifest, report):
    assert report["rows"] == {"read": 12, "loaded": 9, "quarantined": 3}
    assert report["splits"] == bad_manifest.splits
    assert report["manifest"] == str(bad_manifest.path)


def test_empty_caption_is_absent_not_quarantined(bad_manifest, report):
    assert bad_manifest.empty_caption_line not in quarantined_lines(report)
    assert report["fields"]["caption"]["present"] == round(8 / 9, 4)  # 8 of 9 loaded rows
    assert report["fields"]["image"]["present"] == 1.0  # bad images were quarantined
    assert report["fields"]["label"]["present"] == 1.0


def test_fields_kinds_roles_and_given_label_set(report):
    fields = report["fields"]
    assert {name: (f["kind"], f["role"]) for name, f in fields.items()} == {
        "caption": ("text", "input"),
        "image": ("image", "input"),
        "label": ("label", "target"),
    }
    assert fields["label"]["labels"] == ["red", "blue"]  # the given set, stripped, in order
    assert report["schema_inferred"] is False  # a label set was given


def test_quarantine_file_is_written_only_where_asked(bad_manifest, report, tmp_path):
    assert "quarantine_file" not in report  # inspecting writes nothing into the data folder
    assert sorted(p.name for p in bad_manifest.path.parent.iterdir()) == ["img", "manifest.jsonl"]

    elsewhere = tmp_path / "out" / "bad.jsonl"
    again = inspect_manifest(bad_manifest.path, labels="red,blue", quarantine_path=elsewhere)
    assert again["quarantine_file"] == str(elsewhere)
    lines = [json.loads(line) for line in elsewhere.read_text(encoding="utf-8").splitlines()]
    assert {r["line"]: (r["reason"], r["field"]) for r in lines} == bad_manifest.quarantined
    assert len(lines) == 3


def test_label_set_from_a_config_file(bad_manifest, tmp_path):
    config = write_config(bad_manifest, tmp_path)
    report = inspect_manifest(bad_manifest.path, config=str(config))
    assert quarantined_lines(report) == bad_manifest.quarantined
    assert report["rows"] == {"read": 12, "loaded": 9, "quarantined": 3}
    assert report["fields"]["label"]["labels"] == ["red", "blue"]


def test_strict_config_raises_on_first_bad_row(bad_manifest, tmp_path):
    config = write_config(bad_manifest, tmp_path, strict=True)
    with pytest.raises(DataError, match=r"manifest\.jsonl:3 field 'image': unreadable image"):
        inspect_manifest(bad_manifest.path, config=str(config))


def test_without_a_label_set_labels_come_from_train_rows(bad_manifest):
    report = inspect_manifest(bad_manifest.path)
    assert report["schema_inferred"] is True
    assert "labels" not in report["fields"]["label"]  # no fixed set in the schema
    # labels are fitted on train rows; 'green' sits in the test split, so it is still unknown
    assert quarantined_lines(report) == bad_manifest.quarantined
    green = report["quarantine"]["unknown label"]["examples"][0]
    assert green["detail"] == "'green' is not in the label set [blue, red]"


def test_render_prints_counts_presence_and_reasons(bad_manifest, report):
    console = Console(record=True, width=300, file=io.StringIO())
    render_inspection(report, console)
    text = console.export_text()
    assert "rows: 12 read, 9 loaded, 3 quarantined; splits: train 7, val 1, test 1" in text
    assert "88.9%" in text  # caption presence
    for line, (reason, field) in bad_manifest.quarantined.items():
        assert reason in text
        assert f"line {line}, {field}:" in text
    assert "image file is truncated" in text
    assert "missing.png does not exist" in text
    assert "'green' is not in the label set" in text
    assert "write every quarantined row with its reason: --quarantine FILE" in text


def test_render_without_bad_rows_has_no_quarantine_table(tiny_manifest):
    report = inspect_manifest(tiny_manifest)
    assert report["quarantine"] == {} and "quarantine_file" not in report
    assert not (tiny_manifest.parent / "quarantine.jsonl").exists()
    console = Console(record=True, width=300, file=io.StringIO())
    render_inspection(report, console)
    text = console.export_text()
    assert "24 read, 24 loaded, 0 quarantined" in text
    assert "quarantined rows" not in text


def test_render_does_not_read_data_as_markup():
    detail = "'[/x]' is not in the label set [a, b]"
    report = {
        "manifest": "data[1].jsonl",
        "schema_inferred": True,
        "fields": {},
        "rows": {"read": 1, "loaded": 0, "quarantined": 1},
        "splits": {},
        "quarantine": {
            "unknown label": {
                "count": 1,
                "examples": [{"line": 2, "field": "label", "detail": detail}],
            }
        },
        "quarantine_file": "q[2].jsonl",
        "warnings": ["input '[red]' almost determines target 'label'"],
    }
    console = Console(record=True, width=300, file=io.StringIO())
    render_inspection(report, console)
    text = console.export_text()
    assert detail in text and "data[1].jsonl" in text and "q[2].jsonl" in text
    assert "warning: input '[red]' almost determines" in text


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_one_non_numeric_value_is_quarantined_and_named(tmp_path):
    rows = [{"price": i * 0.5, "text": f"item {i}", "label": "ab"[i % 2]} for i in range(30)]
    rows[12]["price"] = "twelve"
    report = inspect_manifest(write_rows(tmp_path / "m.jsonl", rows))
    assert report["fields"]["price"]["kind"] == "tabular"
    assert report["fields"]["price"]["numeric"] == ["price"]
    bad = report["quarantine"]["non-numeric value"]
    assert bad["count"] == 1
    assert bad["examples"][0]["line"] == 13 and bad["examples"][0]["field"] == "price"
    assert "'twelve'" in bad["examples"][0]["detail"]


def test_a_missing_target_is_a_warning_that_asks_for_it(tmp_path):
    rows = [{"question": f"what is {i}", "reply": "ab"[i % 2]} for i in range(30)]
    report = inspect_manifest(write_rows(tmp_path / "m.jsonl", rows))
    assert report["warnings"] == [
        "no target column found: name it with --target (data.target in a config); "
        "columns: question, reply"
    ]
    named = inspect_manifest(tmp_path / "m.jsonl", target="reply")
    assert named["fields"]["reply"]["role"] == "target" and named["warnings"] == []


def test_an_input_that_gives_the_target_away_is_a_warning(tmp_path):
    rows = [
        {
            "text": f"photo {i} of something",
            "colour": "rgb"[i % 3],  # no relation to the label
            "graded_by": "ann" if i % 2 else "bob",  # bookkeeping: bob graded every 'no'
            "uid": f"u{i}",  # unique per row: determines nothing for an unseen row
            "label": "yes" if i % 2 else "no",
        }
        for i in range(60)
    ]
    report = inspect_manifest(write_rows(tmp_path / "m.jsonl", rows))
    leaks = [w for w in report["warnings"] if "almost determines" in w]
    assert leaks == [
        "input 'graded_by' almost determines target 'label': its value predicts it for 100.0% "
        "of rows (the commonest label alone: 50.0%); if it is bookkeeping that gives the answer "
        "away, leave it out of the inputs (data.fields or model.inputs)"
    ]


def test_a_mostly_constant_target_is_not_a_leak(tmp_path):
    rows = [{"text": f"t {i}", "kind": "a", "label": "x" if i else "y"} for i in range(40)]
    report = inspect_manifest(write_rows(tmp_path / "m.jsonl", rows))
    assert not [w for w in report["warnings"] if "almost determines" in w]
