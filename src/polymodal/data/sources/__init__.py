"""Where rows come from: manifests (JSONL/CSV, indexed lazily) and converters that write a
manifest from a dataset's published format.

- ``manifest``: ``index_manifest`` and ``ManifestIndex``, what training and evaluation read.
- ``coco``: COCO captions JSON and the Karpathy split file.
- ``vqa``: VQA v2 questions + annotations (+ complementary pairs); the official results JSON.
- ``easyvqa``: easy-VQA from its PyPI package.
- ``folder``: an image folder with one sub-folder per class.

Every converter writes ``OUT/manifest.jsonl`` (one JSON object a line, image paths relative to
``OUT`` where possible, a ``split`` column) and returns a ``Conversion``; entries it leaves out
are listed with their reasons in ``OUT/skipped.jsonl`` (see ``convert``).
"""

from polymodal.data.sources.coco import convert_coco_captions, convert_karpathy
from polymodal.data.sources.convert import Conversion, by_split, one_or_by_split
from polymodal.data.sources.easyvqa import convert_easyvqa
from polymodal.data.sources.folder import convert_image_folder
from polymodal.data.sources.manifest import (
    FORMATS,
    LINE_KEY,
    ManifestIndex,
    Row,
    index_manifest,
)
from polymodal.data.sources.vqa import convert_vqa, write_vqa_results

__all__ = [
    "FORMATS",
    "LINE_KEY",
    "Conversion",
    "ManifestIndex",
    "Row",
    "by_split",
    "convert_coco_captions",
    "convert_easyvqa",
    "convert_image_folder",
    "convert_karpathy",
    "convert_vqa",
    "index_manifest",
    "one_or_by_split",
    "write_vqa_results",
]
