"""How fast does rbmnet_predict go? Seconds per image on CPU (2 threads), per backend (torch, onnx),
batch 1 and 4, with and without TTA.

    .venv/bin/python benchmarks/predict_speed.py [--model MODEL_FOLDER] [--images 100] [--backends torch onnx]

Without --model it builds a segmentation model folder with the DEFAULT plan (512x512 input,
features [32..512], resunet) and random weights: speed does not depend on what the weights learned.
The onnx backend needs an export: a model without one is exported first (rbmnet_export's code,
into the model folder). It writes synthetic 512x512 radiographs to a temporary folder, predicts all
of them once per setting, each setting in its own subprocess so that peak memory (VmHWM) is that
setting's own, and writes benchmarks/results/predict_speed.json. Where CUDA exists the torch runs go
there too. A forward-only probe compares cheap CPU variants (channels_last, bf16 autocast, ONNX
Runtime) of the same network.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

RESULTS = Path(__file__).resolve().parent / "results" / "predict_speed.json"
# goals for a 512 x 512 radiograph on 2 CPU cores without TTA (nnU-Net on the same machine: 2.33 s)
TARGET_SECONDS_PER_IMAGE = 0.45
TARGET_PEAK_MIB = 1536


def synthetic_radiograph(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark jaw-like field with a row of bright rounded 'teeth' and film grain; uint8."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.25 + 0.15 * np.exp(-((y - 0.5) ** 2) / 0.08)
    for row in (0.38, 0.62):
        for center in np.linspace(0.15, 0.85, rng.integers(10, 15)):
            cx, cy = center + rng.normal(0, 0.01), row + rng.normal(0, 0.02)
            image += 0.45 * (((x - cx) / 0.025) ** 2 + ((y - cy) / 0.09) ** 2 < 1)
    image = ndimage.gaussian_filter(image, 2.0) + rng.normal(0, 0.03, image.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def build_default_model(folder: Path) -> Path:
    import torch

    from rbmnet.data.dataset_json import make_dataset_json, tooth_labels
    from rbmnet.io.atomic import write_json
    from rbmnet.networks import build_network
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
    from rbmnet.planning.plan import Plan
    from rbmnet.model.checkpoint import FINAL, save_checkpoint
    from rbmnet.layout import fold_folder_name

    plan = Plan(dataset_name="Bench")
    dataset_json = make_dataset_json("Bench", tooth_labels(None), 0, 0)
    model_folder = folder / "seg__resunet__random__frac1__plans"
    write_json(model_folder / "plans.json", plan.to_dict())
    write_json(model_folder / "dataset.json", dataset_json)
    torch.manual_seed(0)
    meta = {"stage": "segmentation", "architecture": plan.network.architecture, "model_id": model_folder.name,
            "fold": "0", "output_channels": 1, "task": "binary", "labels": dataset_json["labels"]}
    network = build_network(plan.network, 1, input_channels=NETWORK_INPUT_CHANNELS)
    save_checkpoint(model_folder / fold_folder_name(0) / FINAL, network, None, 0, [],
                    plan.to_dict(), dataset_json, meta)
    return model_folder


def run_setting(setting: dict) -> dict:
    """One prediction run (in a fresh subprocess): wall time, stage breakdown, peak memory."""
    import torch

    from rbmnet.inference.predictor import predict_folder

    torch.set_num_threads(setting["threads"])
    load_before = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    report = predict_folder(setting["input_dir"], setting["output_dir"], setting["model"], folds=setting["folds"],
                            tta=setting["tta"], device=setting["device"], batch_size=setting["batch_size"],
                            num_workers=setting["num_workers"], progress=False, backend=setting["backend"])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    count = len(report.predicted)
    if report.failures or count != setting["images"]:
        raise SystemExit(f"benchmark run failed: {report.failures[:3]}")
    result = {
        "backend": setting["backend"], "device": setting["device"], "tta": setting["tta"],
        "torch_threads": torch.get_num_threads(),
        "batch_size": setting["batch_size"], "num_workers": setting["num_workers"], "images": count,
        "wall_seconds": round(wall, 3), "seconds_per_image": round(wall / count, 4),
        "images_per_second": round(count / wall, 3),
        # CPU time of all threads: what the run would take on idle cores is about this / torch threads,
        # a figure that other load on a shared machine disturbs far less than the wall time
        "cpu_seconds_per_image": round(cpu / count, 4),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
        # summed over threads; stages overlap, so per-image sums can exceed seconds_per_image
        "stage_seconds_per_image": {k: round(v / count, 4) for k, v in report.stage_seconds.items()},
        "peak_rss_mib": peak_rss_mib(),
    }
    if setting["device"] == "cuda":
        result["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def peak_rss_mib() -> float:
    """This process's own peak resident memory. Linux's ru_maxrss would not do: it carries the parent's
    peak over fork and exec (measured), so every worker would report at least what the parent held."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:  # not Linux: the portable figure
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def forward_probe(setting: dict) -> dict:
    """Forward pass alone (one 512x512 image at a time), the plain network vs the cheap CPU fixes.

    Order matters: reuse_freed_memory is process-wide and cannot be undone, so the variants without it
    run first. CPU seconds (process time, all threads) are less disturbed by other load than wall time.
    """
    import torch

    from rbmnet.inference.backends import BACKENDS
    from rbmnet.inference.model_selection import select_folds
    from rbmnet.inference.predictor import reuse_freed_memory
    from rbmnet.model.forward import probabilities
    from rbmnet.model.loading import load_fold_model
    from rbmnet.tasks.binary import BinaryTask

    torch.set_num_threads(setting["threads"])
    model = Path(setting["model"])
    fold = select_folds(model, setting["folds"])[0]
    loaded = load_fold_model(model, fold)
    network, (height, width) = loaded.network, loaded.plan.input_size
    images = torch.rand(1, 1, height, width)
    variants = (("fp32_contiguous", torch.contiguous_format, None, False),
                ("fp32_channels_last", torch.channels_last, None, False),
                ("fp32_channels_last_reuse_freed_memory", torch.channels_last, None, True),
                ("bf16_autocast_channels_last_reuse_freed_memory", torch.channels_last, torch.bfloat16, True))
    results, reference = {}, None
    for name, memory_format, dtype, reuse in variants:
        if reuse:
            reuse_freed_memory()
        network = network.to(memory_format=memory_format)
        walls, cpus = [], []
        for _ in range(4):  # the first run warms oneDNN's kernel choice up; report the best of the rest
            wall, cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                output = probabilities(network, images, BinaryTask()).float()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        results[name] = {"seconds_per_image": round(min(walls[1:]), 4), "cpu_seconds_per_image": round(min(cpus[1:]), 4)}
        if reference is None:
            reference = output
        else:
            results[name]["max_abs_probability_diff"] = round(float((output - reference).abs().max()), 5)
    if "onnx" in setting["backends"]:  # the exported graph in ONNX Runtime (Sobel channel and activation inside)
        predict = BACKENDS["onnx"].load(model, fold, torch.device("cpu")).predict
        walls, cpus = [], []
        for _ in range(4):
            wall, cpu = time.perf_counter(), time.process_time()
            output = predict(images.numpy())
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        results["onnxruntime"] = {"seconds_per_image": round(min(walls[1:]), 4),
                                  "cpu_seconds_per_image": round(min(cpus[1:]), 4),
                                  "max_abs_probability_diff": round(float((output - reference).abs().max()), 5)}
    return results


def ensure_export(model: Path, folds: list[str] | None) -> None:
    """Export the folds that lack an up-to-date ONNX graph (the onnx backend needs one per fold)."""
    from rbmnet.export.model_export import export_model
    from rbmnet.inference.model_selection import select_folds
    from rbmnet.model.exported import stale_reason

    missing = [fold for fold in select_folds(model, folds) if stale_reason(model, fold) is not None]
    if missing:
        start = time.perf_counter()
        exports = export_model(model, missing)
        print(f"exported fold(s) {', '.join(missing)} in {time.perf_counter() - start:.0f} s; max |onnx - torch| "
              f"{max(e.max_difference for e in exports):.2g}", flush=True)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def in_subprocess(mode: str, setting: dict) -> dict:
    completed = subprocess.run([sys.executable, __file__, f"--{mode}", json.dumps(setting)],
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"{mode} subprocess failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained segmentation model folder (default: random weights)")
    parser.add_argument("--folds", nargs="*", default=None, help="folds of --model (default: all trained)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="side of the synthetic radiographs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--skip-tta", action="store_true", help="CPU without TTA only (half the time)")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"],
                        help="backends measured on the CPU (CUDA runs use torch)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker or args.probe:
        function = run_setting if args.worker else forward_probe
        print(json.dumps(function(json.loads(args.worker or args.probe))))
        return

    import torch

    from rbmnet.io.atomic import write_json
    from rbmnet.io.images import write_png

    with tempfile.TemporaryDirectory(prefix="rbmnet_predict_speed_") as tmp:
        tmp = Path(tmp)
        model = args.model.absolute() if args.model else build_default_model(tmp / "models")
        if "onnx" in args.backends:
            ensure_export(model, args.folds)
        input_dir = tmp / "images"
        input_dir.mkdir()
        rng = np.random.default_rng(0)
        for index in range(args.images):
            write_png(input_dir / f"synthetic_{index:03d}.png", synthetic_radiograph(rng, args.size))
        base = {"input_dir": str(input_dir), "model": str(model), "folds": args.folds, "images": args.images,
                "threads": args.threads, "batch_size": args.batch_size, "num_workers": args.num_workers,
                "backends": args.backends}
        runs = []
        # on CPU a batch buys little speed but costs memory: batch 1 and --batch-size, each backend
        plans = [(backend, "cpu", tta, batch_size) for backend in args.backends for tta in (False, True)
                 for batch_size in dict.fromkeys((1, args.batch_size))]
        if torch.cuda.is_available():
            plans += [("torch", "cuda", tta, args.batch_size) for tta in (False, True)]
        for backend, device, tta, batch_size in plans:
            if args.skip_tta and tta:
                continue
            setting = {**base, "backend": backend, "device": device, "tta": tta, "batch_size": batch_size,
                       "output_dir": str(tmp / f"out_{backend}_{device}_{tta}_{batch_size}")}
            runs.append(in_subprocess("worker", setting))
            print(f"{backend} {device} tta={tta} batch {batch_size}: {runs[-1]['seconds_per_image']:.3f} s/image "
                  f"({runs[-1]['cpu_seconds_per_image']:.3f} CPU s/image, load {runs[-1]['load_average_1min']}), "
                  f"{runs[-1]['images_per_second']:.2f} images/s, peak RSS {runs[-1]['peak_rss_mib']} MiB, "
                  f"stages/image {runs[-1]['stage_seconds_per_image']}", flush=True)
        probe = in_subprocess("probe", {**base, "device": "cpu"})
        print(f"forward-only probe (CPU, {args.threads} threads): {probe}")

    plain = {r["backend"]: r for r in runs if r["device"] == "cpu" and not r["tta"] and r["batch_size"] == args.batch_size}
    result = {
        "model": str(args.model) if args.model else "default plan, random weights (resunet [32..512], 512x512)",
        "images": args.images, "image_size": [args.size, args.size],
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "onnxruntime": _version("onnxruntime"),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "runs": runs, "forward_probe_cpu": probe,
        "load_average_after": list(os.getloadavg()),  # other work on the machine slows every number
        "target_cpu_seconds_per_image_no_tta": TARGET_SECONDS_PER_IMAGE,
        "target_peak_rss_mib_no_tta": TARGET_PEAK_MIB,
        "meets_target": {backend: run["seconds_per_image"] <= TARGET_SECONDS_PER_IMAGE
                         and run["peak_rss_mib"] <= TARGET_PEAK_MIB for backend, run in plain.items()},
    }
    write_json(args.output, result)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
