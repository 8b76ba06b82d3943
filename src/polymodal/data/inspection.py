"""``polymodal data inspect``: what a manifest holds and which rows cannot be used, and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polymodal.config import DataConfig, load_config
from polymodal.data.pipeline import prepare_data
from polymodal.data.schema import infer_schema
from polymodal.data.sources import read_manifest


def _data_config(
    manifest: str | Path, config: str | None, target: str | None, labels: str | None
) -> DataConfig:
    if config:
        data = load_config(config).data
        return data.model_copy(update={"manifest": Path(manifest)})
    data = DataConfig(manifest=Path(manifest), target=target)
    if labels:
        fields = infer_schema(read_manifest(manifest).rows, target).fields
        targets = [name for name, spec in fields.items() if spec.kind == "label"]
        for name in targets:
            fields[name] = fields[name].model_copy(
                update={"labels": [x.strip() for x in labels.split(",")]}
            )
        data = data.model_copy(update={"fields": fields})
    return data


def inspect_manifest(
    manifest: str | Path,
    config: str | None = None,
    target: str | None = None,
    labels: str | None = None,
    quarantine_path: str | Path | None = None,
) -> dict[str, Any]:
    """Fields with kinds, rows per split, presence per field, and the quarantine summary."""
    data_config = _data_config(manifest, config, target, labels)
    data = prepare_data(data_config)
    examples = [ex for split in data.splits.values() for ex in split]
    presence = {
        name: (sum(ex[name] is not None for ex in examples) / len(examples) if examples else 0.0)
        for name in data.schema.fields
    }
    report: dict[str, Any] = {
        "manifest": str(data.manifest.path),
        "schema_inferred": data.schema_inferred,
        "fields": {
            name: {
                **spec.model_dump(exclude_defaults=True),
                "role": spec.role,
                "present": round(presence[name], 4),
            }
            for name, spec in data.schema.fields.items()
        },
        "rows": {
            "read": len(examples) + len(data.quarantine),
            "loaded": len(examples),
            "quarantined": len(data.quarantine),
        },
        "splits": {name: len(rows) for name, rows in data.splits.items()},
        "quarantine": data.quarantine.summary(),
    }
    if len(data.quarantine):
        path = Path(quarantine_path or data.manifest.base_dir / "quarantine.jsonl")
        report["quarantine_file"] = str(data.quarantine.write(path))
    return report


def render_inspection(report: dict[str, Any], console: Any) -> None:
    """Print the report as rich tables (data is escaped: brackets in it are not markup)."""
    from rich.markup import escape
    from rich.table import Table

    inferred = " (inferred)" if report["schema_inferred"] else ""
    fields = Table(title=escape(f"{report['manifest']}: fields{inferred}"))
    for column in ("field", "kind", "role", "present", "details"):
        fields.add_column(column)
    for name, spec in report["fields"].items():
        details = {k: v for k, v in spec.items() if k not in ("kind", "role", "present")}
        fields.add_row(
            escape(name),
            spec["kind"],
            spec["role"],
            f"{spec['present']:.1%}",
            escape(", ".join(f"{k}={v}" for k, v in details.items())),
        )
    console.print(fields)
    rows = report["rows"]
    splits = escape(", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    console.print(
        f"rows: {rows['read']} read, {rows['loaded']} loaded, "
        f"{rows['quarantined']} quarantined; splits: {splits}"
    )
    if not report["quarantine"]:
        return
    bad = Table(title="quarantined rows")
    for column in ("reason", "count", "examples (line, field: detail)"):
        bad.add_column(column)
    for reason, info in report["quarantine"].items():
        examples = "\n".join(
            escape(f"line {e['line']}, {e['field'] or '-'}: {e['detail']}")
            for e in info["examples"]
        )
        bad.add_row(reason, str(info["count"]), examples)
    console.print(bad)
    console.print(f"all quarantined rows: {escape(report['quarantine_file'])}")
