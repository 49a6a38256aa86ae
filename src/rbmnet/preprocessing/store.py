"""The preprocessed-data format: one memory-mapped array for all images, one for all label maps.

rbmnet_preprocessed/<Name>/<configuration>/
    images.npy   float16 (N, H, W), normalized to [0, 1]; every case: labeled, unlabeled, test
    labels.npy   uint8 (L, H, W), label values as in the raw data (tooth numbers); labeled cases only
    cases.json   {"configuration", "input_size", "normalization", "cases": [CaseRecord...]}

All cases share the plan's input size, so a whole dataset is two arrays: reading a case is a slice of
a memory map (no decoding), and the arrays can be moved to a GPU in one copy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json
from rbmnet.layout import CASES_JSON, IMAGES_NPY, LABELS_NPY

ROLES = ("labeled", "unlabeled", "test")


@dataclass
class CaseRecord:
    name: str
    role: str  # one of ROLES
    index: int  # row in images.npy
    label_index: int | None  # row in labels.npy (labeled cases only)
    source: str  # raw file, relative to the raw dataset folder
    original_shape: list[int]
    original_dtype: str
    clip_low: float
    clip_high: float


class PreprocessedDataset:
    """Read access to one configuration folder; arrays are memory-mapped, not loaded."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta_path = self.folder / CASES_JSON
        if not meta_path.is_file():
            raise RbmnetError(f"{self.folder}: no preprocessed data; run rbmnet_plan_and_preprocess first")
        meta = read_json(meta_path)
        self.configuration: str = meta["configuration"]
        self.input_size: list[int] = meta["input_size"]
        self.normalization: dict = meta["normalization"]
        self.cases = [CaseRecord(**c) for c in meta["cases"]]
        self._by_name = {c.name: c for c in self.cases}
        self.images = np.load(self.folder / IMAGES_NPY, mmap_mode="r")
        labels_path = self.folder / LABELS_NPY
        self.labels = np.load(labels_path, mmap_mode="r") if labels_path.is_file() else None

    def names(self, role: str | None = None) -> list[str]:
        return [c.name for c in self.cases if role is None or c.role == role]

    def record(self, name: str) -> CaseRecord:
        try:
            return self._by_name[name]
        except KeyError:
            raise RbmnetError(f"{self.folder}: no preprocessed case '{name}'") from None

    def image(self, name: str) -> np.ndarray:
        return np.asarray(self.images[self.record(name).index], dtype=np.float32)

    def label(self, name: str) -> np.ndarray:
        record = self.record(name)
        if record.label_index is None or self.labels is None:
            raise RbmnetError(f"case '{name}' has no label (role {record.role})")
        return np.asarray(self.labels[record.label_index])

    def check_matches(self, plan) -> None:
        """Fail clearly when the plan changed after preprocessing (size or normalization)."""
        if list(self.input_size) != list(plan.input_size) or self.normalization != asdict(plan.normalization):
            raise RbmnetError(
                f"{self.folder}: preprocessed with input size {self.input_size} and normalization "
                f"{self.normalization}, but the plan says {plan.input_size} / {asdict(plan.normalization)}; "
                f"re-run rbmnet_plan_and_preprocess")


def configuration_dir(preprocessed_dataset_dir: str | Path, configuration: str) -> Path:
    return Path(preprocessed_dataset_dir) / configuration


def records_to_json(records: list[CaseRecord]) -> list[dict]:
    return [asdict(r) for r in records]
