"""The preprocessed-data format: one memory-mapped array for all images, one for all label maps.

rbmnet_preprocessed/<Name>/<configuration>/
    images.npy   float16 (N, H, W), normalized to [0, 1]; every case: labeled, unlabeled, test
    labels.npy   uint8 (L, H, W), label values as in the raw data (tooth numbers); labeled cases only
    cases.json   {"configuration", "input_size", "normalization", "cases": [CaseRecord...]}

All cases share the plan's input size, so a whole dataset is two arrays: reading a case is a slice of
a memory map (no decoding), and the arrays can be moved to a GPU in one copy. Opening checks each
array against cases.json (`open_array`): a damaged one is a one-line error naming the file, and
rbmnet_plan_and_preprocess takes it for out of date and rebuilds it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import read_json
from rbmnet.layout import CASES_JSON, DEFAULT_PLANS_NAME, IMAGES_NPY, LABELS_NPY, configuration_name

ROLES = ("labeled", "unlabeled", "test")
META_KEYS = ("configuration", "input_size", "normalization", "cases")


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
        meta = read_meta(self.folder)
        self.configuration: str = meta["configuration"]
        self.input_size: list[int] = meta["input_size"]
        self.normalization: dict = meta["normalization"]
        self.cases = [CaseRecord(**c) for c in meta["cases"]]
        self._by_name = {c.name: c for c in self.cases}
        self.images, self.labels = open_arrays(self.folder, meta)

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


def read_meta(folder: Path) -> dict:
    """cases.json of a configuration folder; missing or damaged is a one-line error."""
    path = Path(folder) / CASES_JSON
    if not path.is_file():
        raise RbmnetError(f"{folder}: no preprocessed data; run rbmnet_plan_and_preprocess first")
    try:
        meta = read_json(path)
    except (OSError, ValueError) as exc:
        raise _damaged(path, f"{exc.__class__.__name__}: {exc}") from None
    missing = [key for key in META_KEYS if key not in meta] if isinstance(meta, dict) else list(META_KEYS)
    if missing:
        raise _damaged(path, f"lacks {', '.join(missing)}")
    return meta


def open_arrays(folder: Path, meta: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """images.npy and labels.npy (None without labeled cases), memory-mapped, checked against cases.json."""
    folder = Path(folder)
    size = tuple(meta["input_size"])
    labeled = sum(c["label_index"] is not None for c in meta["cases"])
    images = open_array(folder / IMAGES_NPY, np.float16, (len(meta["cases"]), *size))
    labels = open_array(folder / LABELS_NPY, np.uint8, (labeled, *size)) if labeled else None
    return images, labels


def open_array(path: Path, dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Memory-map one array of the store after checking that it is whole.

    Cheap and sure against a truncated file, a garbled header or another array in its place: the .npy
    header must give the expected dtype and shape, and the file must hold exactly the header and those
    bytes. Flipped bits inside the data are not found: a checksum would read every byte (gigabytes)
    at each start.
    """
    dtype = np.dtype(dtype)
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            header_shape, fortran_order, header_dtype = read_header(file)
            data_offset = file.tell()
    except FileNotFoundError:
        raise _damaged(path, "missing") from None
    except (ValueError, EOFError):
        raise _damaged(path, f"unreadable .npy header, {path.stat().st_size} bytes") from None
    except OSError as exc:
        raise _damaged(path, f"unreadable: {exc.__class__.__name__}: {exc.strerror}") from None
    if header_dtype != dtype or tuple(header_shape) != tuple(shape) or fortran_order:
        raise _damaged(path, f"holds {header_dtype} {tuple(header_shape)}, "
                             f"cases.json describes {dtype} {tuple(shape)}")
    actual, expected = path.stat().st_size, data_offset + dtype.itemsize * int(np.prod(shape))
    if actual < expected:
        raise _damaged(path, f"truncated: {actual} of {expected} bytes")
    if actual > expected:
        raise _damaged(path, f"{actual} bytes, {actual - expected} more than its header describes")
    return np.load(path, mmap_mode="r")


def _damaged(path: Path, detail: str) -> RbmnetError:
    detail = " ".join(detail.split())  # exception texts may span lines; the error is one
    return RbmnetError(f"{path}: damaged preprocessed data ({detail}); run {rebuild_command(path.parent)} "
                       f"again to rebuild it")


def rebuild_command(folder: Path) -> str:
    """The planning command that rebuilds configuration folder rbmnet_preprocessed/<Name>/<configuration>:
    with -p when only plans other than the default one use that configuration."""
    dataset_dir = Path(folder).parent
    plans = []
    for path in sorted(dataset_dir.glob("*.json")):  # plans.json and the other plans names' files
        try:
            size = read_json(path).get("input_size")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(size, list) and len(size) == 2 and configuration_name(*size) == Path(folder).name:
            plans.append(path.stem)
    command = f"rbmnet_plan_and_preprocess -d {dataset_dir.name}"
    if not plans or DEFAULT_PLANS_NAME in plans:
        return command
    return f"{command} -p {plans[0]}" + (f" (or -p {', '.join(plans[1:])})" if len(plans) > 1 else "")


def configuration_dir(preprocessed_dataset_dir: str | Path, configuration: str) -> Path:
    return Path(preprocessed_dataset_dir) / configuration


def records_to_json(records: list[CaseRecord]) -> list[dict]:
    return [asdict(r) for r in records]
