"""dataset.json (see docs/architecture.md): reading with validation, writing atomically."""
from __future__ import annotations

import json
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json
from rbmnet.layout import DATASET_JSON

REQUIRED_KEYS = ("name", "labels", "numTraining", "numUnlabeled", "file_ending", "channel_names")
TOOTH_NUMBERINGS = ("FDI", "universal", None)

FDI_TEETH = [q * 10 + i for q in (1, 2, 3, 4) for i in range(1, 9)]
UNIVERSAL_TEETH = list(range(1, 33))


def tooth_labels(numbering: str | None) -> dict[str, int]:
    """Label dict with background 0 and one entry per tooth number of the numbering."""
    labels = {"background": 0}
    if numbering == "FDI":
        labels.update({f"tooth_{n}": n for n in FDI_TEETH})
    elif numbering == "universal":
        labels.update({f"tooth_{n}": n for n in UNIVERSAL_TEETH})
    else:
        labels["tooth"] = 1
    return labels


def make_dataset_json(name: str, labels: dict[str, int], num_training: int, num_unlabeled: int,
                      num_test: int = 0, tooth_numbering: str | None = None, file_ending: str = ".png",
                      description: str = "", source: str = "") -> dict:
    if tooth_numbering not in TOOTH_NUMBERINGS:
        raise ValueError(f"tooth_numbering must be one of {TOOTH_NUMBERINGS}")
    return {
        "name": name,
        "description": description,
        "source": source,
        "channel_names": {"0": "radiograph"},
        "labels": dict(sorted(labels.items(), key=lambda kv: kv[1])),
        "tooth_numbering": tooth_numbering,
        "numTraining": num_training,
        "numUnlabeled": num_unlabeled,
        "numTest": num_test,
        "file_ending": file_ending,
    }


def write_dataset_json(dataset_dir: str | Path, content: dict) -> Path:
    path = Path(dataset_dir) / DATASET_JSON
    write_json(path, content)
    return path


def load_dataset_json(dataset_dir: str | Path) -> dict:
    """Read and validate dataset.json; every problem is a one-line RbmnetError naming the file."""
    path = Path(dataset_dir) / DATASET_JSON
    if not path.is_file():
        raise RbmnetError(f"{path}: dataset.json missing")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RbmnetError(f"{path}: dataset.json is not valid JSON ({exc})") from None
    if not isinstance(content, dict):
        raise RbmnetError(f"{path}: dataset.json must hold a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in content]
    if missing:
        raise RbmnetError(f"{path}: dataset.json lacks key(s) {', '.join(missing)}")
    labels = content["labels"]
    if not isinstance(labels, dict) or not all(isinstance(v, int) and 0 <= v <= 255 for v in labels.values()):
        raise RbmnetError(f"{path}: 'labels' must map names to integers 0..255")
    if 0 not in labels.values():
        raise RbmnetError(f"{path}: 'labels' must declare background as 0")
    if content.get("tooth_numbering") not in TOOTH_NUMBERINGS:
        raise RbmnetError(f"{path}: 'tooth_numbering' must be one of FDI, universal or null")
    return content
