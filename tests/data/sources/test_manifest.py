from __future__ import annotations

from pathlib import Path

import pytest

from polymodal.data.quarantine import Quarantine
from polymodal.data.sources import index_manifest
from polymodal.errors import DataError


def test_jsonl_bad_lines_are_quarantined(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n[1, 2]\n{"a": "\xff\xfe"}\n\n{"a": 2}\n')
    quarantine = Quarantine()
    manifest = index_manifest(path, quarantine)
    rows = list(manifest.rows(range(len(manifest))))
    assert [r["a"] for r in rows] == [1, 2]
    assert [r["_line"] for r in rows] == [1, 6]
    assert [(q.line, q.reason) for q in quarantine.rows] == [
        (2, "malformed row"),
        (3, "malformed row"),
        (4, "undecodable text"),
    ]


def test_csv_rows_and_empty_cells(tmp_path: Path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"image,text,price\na.png,hello,1.5\nb.png,,2\nc.png,\xe9t\xe9,3\n")
    quarantine = Quarantine()
    manifest = index_manifest(path, quarantine)
    rows = list(manifest.rows(range(len(manifest))))
    assert rows[0] == {"image": "a.png", "text": "hello", "price": "1.5", "_line": 2}
    assert rows[1]["text"] is None
    assert len(rows) == 2
    assert quarantine.rows[0].reason == "undecodable text" and quarantine.rows[0].field == "text"
    assert manifest.base_dir == tmp_path


def test_strict_quarantine_raises(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(DataError, match=r"m.jsonl:2: malformed row"):
        index_manifest(path, Quarantine(strict=True))


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.jsonl", None, "does not exist"),
        ("m.txt", "x", "unknown format"),
        ("m.jsonl", "\n\n", "no readable rows"),
    ],
)
def test_manifest_errors(tmp_path: Path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        index_manifest(path)


def test_quarantine_summary_and_file(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\nbad\nworse\n')
    quarantine = Quarantine()
    index_manifest(path, quarantine)
    summary = quarantine.summary(examples=1)
    assert summary["malformed row"]["count"] == 2
    assert len(summary["malformed row"]["examples"]) == 1
    written = quarantine.write(tmp_path / "q" / "quarantine.jsonl")
    assert len(written.read_text().splitlines()) == 2


def test_a_jsonl_that_is_not_json_says_why(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text("image,text\na.png,hello\n", encoding="utf-8")  # a CSV named .jsonl
    with pytest.raises(DataError) as exc:
        index_manifest(path)
    message = str(exc.value)
    assert message.startswith(f"manifest {path} has no readable rows; line 1: malformed row: ")
    assert "not valid JSON (Expecting value at column 1)" in message
    assert "line 2: malformed row" in message


def test_rows_are_read_back_from_their_byte_ranges(tmp_path: Path):
    path = tmp_path / "m.csv"
    path.write_bytes(
        b'text,price\r\n"a caption\r\nover two lines",1.5\r\nplain,2\r\n"q ""quoted""",\r\n'
    )
    index = index_manifest(path)
    assert len(index) == 3 and index.lines.tolist() == [3, 4, 5]  # a record's last line
    assert index.read(0) == {"text": "a caption\r\nover two lines", "price": "1.5", "_line": 3}
    assert index.read(2) == {"text": 'q "quoted"', "price": None, "_line": 5}
    assert [r["text"] for r in index.rows([2, 1])] == ['q "quoted"', "plain"]
    assert index.columns == ["price", "text"]


def test_the_index_holds_positions_not_rows(tmp_path: Path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1, "split": "val"}\n\n{"a": "x y"}\n{"b": null}\n', encoding="utf-8")
    index = index_manifest(path)
    assert index.starts.tolist() == [0, 26, 39] and index.lines.tolist() == [1, 3, 4]
    assert [index.split_names[c] for c in index.split_codes] == ["val", None, None]
    assert index.columns == ["a", "split"]  # b holds no value in any row
    assert index.read(1) == {"a": "x y", "_line": 3}
    before = index.digest
    path.write_text(path.read_text() + '{"a": 2}\n', encoding="utf-8")
    assert index_manifest(path).digest != before
