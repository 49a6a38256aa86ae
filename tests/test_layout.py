"""layout.py: the folder and file names existing datasets, plans and model folders already use, on the bottom floor."""
from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

from rbmnet import layout


def test_names_keep_the_values_existing_folders_have():
    # renaming any of these orphans every dataset, plan and trained model already on disk
    assert (layout.DATASET_JSON, layout.IMAGES_TR, layout.LABELS_TR, layout.IMAGES_UNLABELED, layout.IMAGES_TS,
            layout.LABELS_TS) == ("dataset.json", "imagesTr", "labelsTr", "imagesUnlabeled", "imagesTs", "labelsTs")
    assert (layout.FINGERPRINT_JSON, layout.SPLITS_JSON, layout.plans_file_name(layout.DEFAULT_PLANS_NAME),
            layout.configuration_name(256, 512)) == ("dataset_fingerprint.json", "splits_final.json", "plans.json",
                                                     "2d_256x512")
    assert (layout.CHECKPOINT_FINAL, layout.CHECKPOINT_LATEST, layout.TRAINING_LOG, layout.PROGRESS_PNG,
            layout.VALIDATION_FOLDER, layout.SUMMARY_JSON, layout.CROSSVAL_JSON, layout.TRAINING_CASES_JSON,
            layout.POSTPROCESSING_JSON, layout.SPLIT_JSON, layout.MODEL_PLANS_JSON) == (
        "checkpoint_final.pt", "checkpoint_latest.pt", "training_log.jsonl", "progress.png", "validation",
        "summary.json", "crossval_summary.json", "training_cases.json", "postprocessing.json", "split.json",
        "plans.json")
    assert layout.fold_folder_name(3) == "fold_3" and layout.fold_folder_name("all") == "fold_all"
    assert layout.fold_of_folder_name(layout.fold_folder_name("all")) == "all"
    assert fnmatch("fold_3", layout.NUMBERED_FOLDS_GLOB) and not fnmatch("fold_all", layout.NUMBERED_FOLDS_GLOB)


def test_layout_imports_nothing_from_rbmnet():
    tree = ast.parse(Path(layout.__file__).read_text(encoding="utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "." for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert [name for name in imported if name.startswith(("rbmnet", "."))] == []
