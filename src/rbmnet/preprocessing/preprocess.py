"""Write the preprocessed store (format in preprocessing/store.py) for every case of a raw dataset.

Every case is decoded and checked by `checks.read_case` (the same reading the fingerprint did, so the
0/255 fix applies here too), normalized and resized by `transforms`, and written into two memory
maps. The maps are filled under temporary names and renamed at the end; cases.json is written last,
so a folder with a cases.json is complete. Its "signature" (raw files + plan settings) lets an
unchanged dataset skip the work on the next run, unless an array is damaged. Temporary maps that a
killed run left are deleted at the next start (io/leftovers.py).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

from rbmnet.data.checks import DatasetInventory, raw_signature, read_case
from rbmnet.parallel import map_cases
from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json
from rbmnet.io.leftovers import owned_name, remove_leftovers
from rbmnet.layout import CASES_JSON, IMAGES_NPY, LABELS_NPY
from rbmnet.planning.plan import NormalizationConfig, Plan
from rbmnet.preprocessing.store import CaseRecord, open_arrays, read_meta, records_to_json
from rbmnet.preprocessing.transforms import preprocess_image, resize_label

STORE_FORMAT_VERSION = 1
TEMP_PREFIXES = (".images.", ".labels.")
TEMP_SUFFIX = ".npy.tmp"


def preprocessing_signature(inventory: DatasetInventory, plan: Plan) -> str:
    settings = {"input_size": list(plan.input_size), "normalization": asdict(plan.normalization),
                "format_version": STORE_FORMAT_VERSION}
    return hashlib.sha256((raw_signature(inventory) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()


def is_up_to_date(output_dir: Path, signature: str) -> bool:
    """Same raw files and settings, and arrays whole: a damaged store is rebuilt, not kept."""
    try:
        meta = read_meta(output_dir)
        if meta.get("signature") != signature:
            return False
        open_arrays(output_dir, meta)  # header and size checks only; nothing is read
    except RbmnetError:
        return False
    return True


def preprocess_case(task) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """One case -> (float16 image, uint8 label or None, properties). Runs in worker processes."""
    case, image_path, label_path, declared, input_size, normalization = task
    content = read_case(case, image_path, label_path, declared)
    image, properties = preprocess_image(content.image, input_size, NormalizationConfig(**normalization))
    label = resize_label(content.label, input_size) if content.label is not None else None
    return image.astype(np.float16), label, properties


def preprocess_dataset(inventory: DatasetInventory, plan: Plan, output_dir: str | Path, num_processes: int = 2,
                       overwrite: bool = False, verbose: bool = True) -> bool:
    """Fill output_dir with images.npy, labels.npy and cases.json; returns False when already up to date."""
    output_dir = Path(output_dir)
    for prefix in TEMP_PREFIXES:  # left by a killed run; a running one's are kept
        remove_leftovers(output_dir, prefix, TEMP_SUFFIX, pid_only_names=True)
    signature = preprocessing_signature(inventory, plan)
    if not overwrite and is_up_to_date(output_dir, signature):
        return False
    output_dir.mkdir(parents=True, exist_ok=True)
    cases = inventory.cases()
    height, width = plan.input_size
    normalization = asdict(plan.normalization)
    tasks = [(case, image, label, inventory.declared_labels, plan.input_size, normalization)
             for _, case, image, label in cases]
    # owner in the name: two runs on the same folder never write into (or delete) each other's files
    temp_images, temp_labels = (output_dir / owned_name(prefix, TEMP_SUFFIX) for prefix in TEMP_PREFIXES)
    try:
        images = open_memmap(temp_images, mode="w+", dtype=np.float16, shape=(len(cases), height, width))
        labels = (open_memmap(temp_labels, mode="w+", dtype=np.uint8, shape=(len(inventory.labeled), height, width))
                  if inventory.labeled else None)
        records, labeled_count = [], 0
        results = map_cases(preprocess_case, tasks, num_processes, "preprocessing", verbose)
        for index, ((role, case, image_path, _), (image, label, props)) in enumerate(zip(cases, results)):
            images[index] = image
            label_index = None
            if label is not None:
                label_index, labeled_count = labeled_count, labeled_count + 1
                labels[label_index] = label
            records.append(CaseRecord(name=case, role=role, index=index, label_index=label_index,
                                      source=image_path.relative_to(inventory.folder).as_posix(), **props))
        images.flush()
        del images
        if labels is not None:
            labels.flush()
            del labels
        # Remove the completion marker first: arrays and cases.json must never disagree.
        (output_dir / CASES_JSON).unlink(missing_ok=True)
        os.replace(temp_images, output_dir / IMAGES_NPY)
        if inventory.labeled:
            os.replace(temp_labels, output_dir / LABELS_NPY)
        else:
            (output_dir / LABELS_NPY).unlink(missing_ok=True)
        write_json(output_dir / CASES_JSON, {
            "configuration": plan.configuration, "input_size": list(plan.input_size),
            "normalization": normalization, "signature": signature, "format_version": STORE_FORMAT_VERSION,
            "cases": records_to_json(records)})
    finally:
        temp_images.unlink(missing_ok=True)
        temp_labels.unlink(missing_ok=True)
    return True
