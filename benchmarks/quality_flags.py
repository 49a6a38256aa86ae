"""Does quality.csv's agreement score find the bad predictions? Validated on one fold's validation cases.

    .venv/bin/python benchmarks/quality_flags.py [--work /tmp/rbmnet_numbered_teeth_cpu] [--out /tmp/quality_eval]
                                                [--json /tmp/quality_eval/quality_flags.json]

WORK holds the rbmnet roots of an earlier run (benchmarks/numbered_teeth.py --profile cpu): its fold-0 models
are only read. Each setting below predicts fold 0's validation cases (splits_final.json) with rbmnet_predict's
library entry, then scores every saved prediction against its reference label map. Per setting and score:
Spearman's rho between the score and the true Dice (scipy.stats.spearmanr, with its p-value and a bootstrap
95 % interval), and, at each threshold, how many images the flag marks and how many of the worst 5 % (by true
Dice) it catches. Also the CPU seconds of the forward passes with and without measuring agreement.

Only one fold is trained per model, so real fold agreement cannot be measured here. The `standin*` settings
ensemble different fold-0 models (other label fractions, no left-right flips) as a STAND-IN for folds: they
differ by more than folds of one recipe would, and they all saw the same training cases.

Predictions (derived from licensed radiographs) go to OUT, never into the repository; the JSON holds
aggregate numbers only.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from pathlib import Path

import click
import numpy as np
import pandas as pd
from scipy import stats

from workdir import work_environment

MODELS = {
    "binary": "seg__resunet__scratch__frac0.2__cpu_teeth",
    "classes": "seg__resunet__scratch__frac0.2__cpu_teeth__teeth-classes",
    "classes_0.8": "seg__resunet__scratch__frac0.8__cpu_teeth__teeth-classes",
    "classes_nolr": "seg__resunet__scratch__frac0.2__cpu_teeth_nolr__teeth-classes",
    "factorized": "seg__resunet__scratch__frac0.2__cpu_teeth__teeth-factorized",
}
SETTINGS = {  # name -> (models ensembled as folds 0, 1, ..., TTA)
    "tta_binary": (["binary"], True),
    "tta_classes": (["classes"], True),
    "tta_factorized": (["factorized"], True),
    "standin2_classes": (["classes", "classes_0.8"], False),
    "standin3_classes": (["classes", "classes_0.8", "classes_nolr"], False),
    "standin3_classes_tta": (["classes", "classes_0.8", "classes_nolr"], True),
}
SCORES = ("agreement", "fold_agreement", "tta_agreement", "fold_number_agreement", "tta_number_agreement",
          "min_fold_tta_agreement")
# the number agreements run lower than the tooth-mask ones, hence the low end
THRESHOLDS = (0.50, 0.60, 0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98)
WORST_SHARE = 0.05
BOOTSTRAP = 2000


def standin_model(out: Path, results: Path, names: list[str]) -> Path:
    """A model folder whose fold k is model names[k]'s fold 0 (symlinked: the originals are only read)."""
    folder = out / "models" / "__".join(names)
    shutil.rmtree(folder, ignore_errors=True)
    first = results / MODELS[names[0]]
    folder.mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "postprocessing.json"):
        if (first / name).is_file():
            shutil.copy(first / name, folder / name)
    for k, name in enumerate(names):
        (folder / f"fold_{k}").mkdir()
        checkpoint = results / MODELS[name] / "fold_0" / "checkpoint_final.pt"
        (folder / f"fold_{k}" / "checkpoint_final.pt").symlink_to(checkpoint)
    return folder


def true_scores(predictions: Path, labels: Path, cases: list[str], numbering, numbered: bool) -> pd.DataFrame:
    """Per case the Dice of the saved prediction against the reference (binary, and per tooth for teeth)."""
    from rbmnet.evaluation.numbering_metrics import teeth_case_metrics
    from rbmnet.evaluation.segmentation_metrics import case_metrics
    from rbmnet.io.images import read_label

    rows = []
    for case in cases:
        prediction, reference = read_label(predictions / f"{case}.png"), read_label(labels / f"{case}.png")
        if not numbered:
            rows.append({"file": f"{case}.png", "binary_dice": case_metrics(prediction > 0, reference > 0)["dice"]})
        else:
            metrics = teeth_case_metrics(prediction, reference, numbering)
            rows.append({"file": f"{case}.png", "binary_dice": metrics["binary_dice"],
                         "tooth_dice": metrics["tooth_dice"]})
    return pd.DataFrame(rows)


def evaluate_score(score: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict:
    """Spearman's rho (p-value, bootstrap 95 % interval) and the flags at each threshold."""
    rho, p_value = stats.spearmanr(score, truth)
    rng = np.random.default_rng(seed)
    resampled = [stats.spearmanr(score[i], truth[i])[0]
                 for i in (rng.integers(0, len(score), len(score)) for _ in range(BOOTSTRAP))]
    worst_count = math.ceil(WORST_SHARE * len(truth))
    worst = np.argsort(truth, kind="stable")[:worst_count]
    flags = []
    for threshold in THRESHOLDS:
        flagged = score < threshold
        flags.append({"threshold": threshold, "flagged": int(flagged.sum()),
                      "worst_caught": int(flagged[worst].sum())})
    return {"spearman_rho": float(rho), "p_value": float(p_value),
            "rho_95ci": [float(v) for v in np.nanpercentile(resampled, [2.5, 97.5])],
            "worst_count": worst_count, "worst_true_dice_max": float(truth[worst].max()),
            "score_quantiles": {q: float(np.quantile(score, float(q))) for q in ("0.0", "0.05", "0.25", "0.5")},
            "flags": flags}


def forward_seconds(model_folder: Path, folds: list[str], tta: bool, image_paths: list[Path]) -> dict:
    """CPU seconds of the ensemble's forward passes over the cases, without and with measuring agreement
    (alternated batch by batch; process time, as the machine is shared)."""
    import torch

    from rbmnet.inference.predictor import load_ensemble
    from rbmnet.io.images import read_image
    from rbmnet.preprocessing.transforms import preprocess_image

    ensemble = load_ensemble(model_folder, folds, torch.device("cpu"))
    images = np.stack([preprocess_image(read_image(p), ensemble.plan.input_size, ensemble.plan.normalization)[0]
                       for p in image_paths])
    batches = [images[i:i + 4] for i in range(0, len(images), 4)]
    seconds = {"predict": 0.0, "predict_with_agreement": 0.0}
    for batch in batches:
        for name in seconds:
            start = time.process_time()
            getattr(ensemble, name)(batch, tta=tta)
            seconds[name] += time.process_time() - start
    return seconds


@click.command()
@click.option("--work", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("/tmp/rbmnet_numbered_teeth_cpu"), show_default=True)
@click.option("-d", "--dataset", default="UFBA425", show_default=True)
@click.option("--fold", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("/tmp/quality_eval"),
              show_default=True, help="Predictions and stand-in model folders (outside the repository).")
@click.option("--settings", "chosen", default=",".join(SETTINGS), show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads (the machine is shared).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Aggregate numbers (default: OUT/quality_flags.json).")
def main(work: Path, dataset: str, fold: int, out: Path, chosen: str, threads: int, json_path: Path | None) -> None:
    os.environ.update({k: v for k, v in work_environment(work).items() if k.startswith("RBMNET_")})
    import torch

    from rbmnet.data.numbering import NUMBERINGS
    from rbmnet.evaluation.reports import json_ready
    from rbmnet.inference.predictor import predict_folder
    from rbmnet.io.atomic import read_json, write_json

    torch.set_num_threads(threads)
    repository = Path(__file__).resolve().parents[1]
    if out.resolve().is_relative_to(repository):
        raise SystemExit(f"error: {out} lies inside the repository; predictions of licensed data go elsewhere")
    raw = work / "rbmnet_raw" / dataset
    results = work / "rbmnet_results" / dataset
    cases = read_json(work / "rbmnet_preprocessed" / dataset / "splits_final.json")[fold]["val"]
    numbering = NUMBERINGS.get(read_json(raw / "dataset.json").get("tooth_numbering"))
    images = out / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    for case in cases:
        (images / f"{case}.png").symlink_to(raw / "imagesTr" / f"{case}.png")

    report = {"dataset": dataset, "fold": fold, "num_cases": len(cases), "worst_share": WORST_SHARE,
              "stand_in_note": "standin* settings ensemble different fold-0 models as a stand-in for folds",
              "models": MODELS, "settings": {}}
    for name in chosen.split(","):
        names, tta = SETTINGS[name]
        folder = results / MODELS[names[0]] if len(names) == 1 else standin_model(out, results, names)
        folds = ["0"] if len(names) == 1 else [str(k) for k in range(len(names))]
        predictions = out / "predictions" / name
        start = time.perf_counter()
        predict_folder(images, predictions, folder, folds=folds, tta=tta, device="cpu", num_workers=1,
                       progress=False, flag_below=0)
        print(f"{name}: predicted {len(cases)} cases in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        quality = pd.read_csv(predictions / "quality.csv")
        reference_scores = true_scores(predictions, raw / "labelsTr", cases, numbering, numbered="teeth" in quality)
        table = quality.merge(reference_scores, on="file", validate="one_to_one")
        # the alternative to the shipped rule (folds first): the weaker of the two agreements
        table["min_fold_tta_agreement"] = table[["fold_agreement", "tta_agreement"]].min(axis=1, skipna=False)
        result = {"models": names, "tta": tta, "true_dice_mean": {}, "scores": {}}
        truths = [t for t in ("tooth_dice", "binary_dice") if t in table]
        for truth in truths:
            result["true_dice_mean"][truth] = float(table[truth].mean())
        for score in SCORES:
            if score in table and table[score].notna().all():
                result["scores"][score] = {truth: evaluate_score(table[score].to_numpy(), table[truth].to_numpy())
                                           for truth in truths}
        if "duplicated_numbers" in table:
            duplicated = table["duplicated_numbers"].fillna("").astype(str).str.len() > 0
            result["cases_with_duplicated_numbers"] = int(duplicated.sum())
            worst = np.argsort(table["tooth_dice"].to_numpy(), kind="stable")[:math.ceil(WORST_SHARE * len(table))]
            result["worst_with_duplicated_numbers"] = int(duplicated.to_numpy()[worst].sum())
            result["tooth_dice_mean_with_without_duplicates"] = [
                float(table.loc[duplicated, "tooth_dice"].mean()), float(table.loc[~duplicated, "tooth_dice"].mean())]
        result["forward_seconds"] = forward_seconds(folder, folds, tta, sorted(images.iterdir()))
        report["settings"][name] = result
        path = json_path or out / "quality_flags.json"
        write_json(path, json_ready(report))
        print(f"{name}: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
