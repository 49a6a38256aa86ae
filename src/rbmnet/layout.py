"""The folder and file names inside the three roots (paths.py finds the roots): every one defined here, once.

    rbmnet_raw/<Name>/            dataset.json, imagesTr/, labelsTr/, imagesUnlabeled/, imagesTs/, labelsTs/
    rbmnet_preprocessed/<Name>/   dataset.json, dataset_fingerprint.json, <plans name>.json, splits_final.json,
                                  2d_<H>x<W>/ (cases.json, images.npy, labels.npy)
    rbmnet_results/<Name>/<model id>/
                                  plans.json, dataset.json, postprocessing.json, crossval_summary.json/.csv,
                                  fold_<k>/ (checkpoint_final.pt, checkpoint_latest.pt, training_log.jsonl,
                                  progress.png, training_cases.json, validation/ (summary.json, summary.csv),
                                  model.onnx and model.json once exported);
                                  a pretext model holds split.json, its checkpoints and validation/ at its top

The model ids themselves (which model a folder holds) are model/folder.py's. This module is on the
bottom floor: it imports nothing from rbmnet.
"""
from __future__ import annotations

# --- raw: rbmnet_raw/<Name>/ --------------------------------------------------------------------
DATASET_JSON = "dataset.json"  # also copied into the preprocessed dataset folder and every model folder
IMAGES_TR = "imagesTr"  # labeled radiographs
LABELS_TR = "labelsTr"  # their label maps, same case names
IMAGES_UNLABELED = "imagesUnlabeled"  # radiographs for pretraining only
IMAGES_TS = "imagesTs"  # held-out test radiographs
LABELS_TS = "labelsTs"  # their labels, where the source has them

# --- preprocessed: rbmnet_preprocessed/<Name>/ --------------------------------------------------
FINGERPRINT_JSON = "dataset_fingerprint.json"
SPLITS_JSON = "splits_final.json"
DEFAULT_PLANS_NAME = "plans"
CASES_JSON = "cases.json"  # inside a configuration folder, with the two arrays below
IMAGES_NPY = "images.npy"
LABELS_NPY = "labels.npy"


def plans_file_name(plans_name: str) -> str:
    """'plans' -> 'plans.json': the plan of that name in the preprocessed dataset folder."""
    return f"{plans_name}.json"


def configuration_name(height: int, width: int) -> str:
    """The preprocessed-data folder of one input size: cases resized to height x width."""
    return f"2d_{height}x{width}"


# --- results: rbmnet_results/<Name>/<model id>/ -------------------------------------------------
MODEL_PLANS_JSON = "plans.json"  # the plan the model was trained with (whatever the plans name)
POSTPROCESSING_JSON = "postprocessing.json"  # teeth models: the post-processing chosen by cross-validation
CROSSVAL_JSON = "crossval_summary.json"
CROSSVAL_CSV = "crossval_summary.csv"
FOLD_PREFIX = "fold_"
CHECKPOINT_FINAL = "checkpoint_final.pt"
CHECKPOINT_LATEST = "checkpoint_latest.pt"
TRAINING_LOG = "training_log.jsonl"
PROGRESS_PNG = "progress.png"
DURATION_JSON = "duration.json"  # predicted vs actual seconds of a finished stage (training/stage_clock.py)
RUN_LOCK = ".lock"  # in a run folder while a training process works there (training/run_lock.py)
TRAINING_CASES_JSON = "training_cases.json"  # segmentation folds: the cases trained on
SPLIT_JSON = "split.json"  # pretext: its seeded train / validation split
VALIDATION_FOLDER = "validation"
SUMMARY_JSON = "summary.json"  # in validation/ (and wherever rbmnet_evaluate writes)
SUMMARY_CSV = "summary.csv"
ONNX_MODEL = "model.onnx"  # in a fold folder: rbmnet_export's graph, normalized image -> probabilities
ONNX_JSON = "model.json"  # beside it: what prediction needs outside the graph (model/exported.py)


def fold_folder_name(fold: int | str) -> str:
    """0 -> 'fold_0', 'all' -> 'fold_all'."""
    return f"{FOLD_PREFIX}{fold}"


NUMBERED_FOLDS_GLOB = f"{FOLD_PREFIX}[0-9]*"  # fold_0 .. fold_4, not fold_all


def fold_of_folder_name(name: str) -> str:
    """'fold_3' -> '3': the inverse of fold_folder_name."""
    return name.removeprefix(FOLD_PREFIX)
