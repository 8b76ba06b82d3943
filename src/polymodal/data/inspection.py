"""``polymodal data inspect``: what a manifest holds and which rows cannot be used, and why."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from polymodal.config import DataConfig, load_config, task_targets
from polymodal.data.dataset import loader, workers_for
from polymodal.data.pipeline import INFER_ROWS, PreparedData, prepare_data
from polymodal.data.quarantine import QuarantinedRow
from polymodal.data.schema import infer_schema, is_absent
from polymodal.data.sources import index_manifest

LEAK_ACCURACY = 0.98  # an input whose value predicts the target this well gives it away
LEAK_GAIN = 0.2  # ... and at least this much better than always guessing the commonest label


def _data_config(
    manifest: str | Path, config: str | None, target: str | None, labels: str | None
) -> DataConfig:
    if config:
        data = load_config(config).data
        return data.model_copy(update={"manifest": Path(manifest)})
    data = DataConfig(manifest=Path(manifest), target=target)
    if labels:
        index = index_manifest(manifest)
        sample = index.rows(range(min(len(index), INFER_ROWS)))
        fields = infer_schema(sample, [target] if target else []).fields
        targets = [name for name, spec in fields.items() if spec.kind == "label"]
        for name in targets:
            fields[name] = fields[name].model_copy(
                update={"labels": [x.strip() for x in labels.split(",")]}
            )
        data = data.model_copy(update={"fields": fields})
    return data


def leaky_inputs(data: PreparedData) -> list[dict[str, Any]]:
    """Inputs whose value almost determines a target: bookkeeping columns that give it away.

    For each (input column, target) the score is the leave-one-out accuracy of predicting a
    row's label as the commonest label of the *other* rows with the same value (the overall
    commonest label where no other row shares it), so a column unique to each row (an id, a
    free text) scores as a guess, and only a value shared by rows with one label scores high.
    """
    found = []
    for target in data.schema.targets:
        rows = data.index.rows(range(len(data.index)))
        labelled = [row for row in rows if not is_absent(row.get(target))]
        labels = [str(row[target]) for row in labelled]
        if not labels:
            continue
        commonest, count = Counter(labels).most_common(1)[0]
        baseline = count / len(labels)
        for name in data.schema.inputs:
            for column in data.schema.columns(name):
                by_value: dict[str, Counter[str]] = defaultdict(Counter)
                values = [str(row.get(column)) for row in labelled]
                for value, label in zip(values, labels, strict=True):
                    by_value[value][label] += 1
                hits = 0
                for value, label in zip(values, labels, strict=True):
                    counts = by_value[value]  # the row itself is taken out of its own count
                    guess = max(counts, key=lambda other: (counts[other] - (other == label), other))
                    if counts[guess] - (guess == label) == 0:
                        guess = commonest
                    hits += guess == label
                accuracy = hits / len(labels)
                if accuracy >= LEAK_ACCURACY and accuracy - baseline >= LEAK_GAIN:
                    found.append(
                        {
                            "field": name,
                            "column": column,
                            "target": target,
                            "accuracy": round(accuracy, 4),
                            "baseline": round(baseline, 4),
                        }
                    )
    return found


def inspect_manifest(
    manifest: str | Path,
    config: str | None = None,
    target: str | None = None,
    labels: str | None = None,
    quarantine_path: str | Path | None = None,
) -> dict[str, Any]:
    """Fields with kinds, rows per split, presence per field, the quarantine summary, and
    warnings: no target found, inputs that give the target away (``leaky_inputs``).

    Quarantined rows are written to ``quarantine_path`` only when it is given.
    """
    data_config = _data_config(manifest, config, target, labels)
    targets = task_targets(load_config(config).model) if config else []
    data = prepare_data(data_config, targets=targets)
    present = dict.fromkeys(data.schema.fields, 0)
    splits = dict.fromkeys(data.splits, 0)  # rows that read cleanly, per split
    for split, dataset in data.splits.items():
        for chunk in loader(dataset, list, 64, workers_for(data_config)):
            for item in chunk:
                if isinstance(item, QuarantinedRow):
                    data.quarantine.add(item)
                    continue
                splits[split] += 1
                for name in present:
                    present[name] += item[name] is not None
    loaded = sum(splits.values())
    presence = {name: count / loaded if loaded else 0.0 for name, count in present.items()}
    warnings = []
    if not data.schema.targets:
        warnings.append(
            "no target column found: name it with --target (data.target in a config); "
            f"columns: {', '.join(data.schema.fields)}"
        )
    for leak in leaky_inputs(data):
        warnings.append(
            f"input '{leak['column']}' almost determines target '{leak['target']}': its value "
            f"predicts it for {leak['accuracy']:.1%} of rows (the commonest label alone: "
            f"{leak['baseline']:.1%}); if it is bookkeeping that gives the answer away, leave it "
            "out of the inputs (data.fields or model.inputs)"
        )
    report: dict[str, Any] = {
        "manifest": str(data.index.path),
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
            "read": loaded + len(data.quarantine),
            "loaded": loaded,
            "quarantined": len(data.quarantine),
        },
        "splits": splits,
        "quarantine": data.quarantine.summary(),
        "warnings": warnings,
    }
    if len(data.quarantine) and quarantine_path:
        report["quarantine_file"] = str(data.quarantine.write(quarantine_path))
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
    for warning in report["warnings"]:
        console.print(f"[bold yellow]warning[/bold yellow]: {escape(warning)}")
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
    if "quarantine_file" in report:
        console.print(f"all quarantined rows: {escape(report['quarantine_file'])}")
    else:
        console.print("write every quarantined row with its reason: --quarantine FILE")
