"""Training and prediction throughput of rbmnet against a plain PyTorch baseline, on the device at hand.

    .venv/bin/python benchmarks/throughput.py [--size 512] [--iterations 20] [--batch-size N] [--compile]

Writes synthetic radiographs (PNG) at --size x --size to a temporary folder, plans and preprocesses
them with rbmnet (default plan: resunet, features [32..512]), then measures images per second of
    pretext training, segmentation training and prediction,
each two ways in the same run, with the same network, batch size and loss:
    rbmnet    the real training loop (loop.train) with its data path (device-resident batches on a GPU,
              batchgenerators workers on a CPU), bf16 autocast, channels_last, cuDNN autotuning, and
              torch.compile with --compile; prediction through model.forward
    baseline  the simplest way: fp32, contiguous tensors, a torch DataLoader whose workers decode the
              source PNGs with PIL and resize them every step; no augmentation (rbmnet augments, so the
              comparison favours the baseline)
Each measurement follows a warm-up (cuDNN autotuning, compilation, worker start). FLOPs of one step
are counted with torch.utils.flop_counter.FlopCounterMode, and the achieved FLOP/s compared with the
device's peak: dense bf16 tensor-core peaks of known GPUs, an estimate for CPUs (cores x clock x
FLOPs per cycle from the vector extensions), or "unknown".

Results go to benchmarks/results/throughput.json (ignored by git). On a shared CPU, the load average
is recorded with the numbers: other processes slow both sides alike, so the ratio is the robust figure.
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results" / "throughput.json"
DATASET = "Bench"

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from the vendors' data sheets; the first name
# contained in torch.cuda.get_device_name() wins, so more specific names come first.
GPU_PEAK_BF16 = [
    ("H100 PCIe", 756e12), ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("B200", 2250e12),
    ("A100", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10", 125e12),
    ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12), ("T4", 65e12),
]


# --- data -----------------------------------------------------------------------------------------

def prepare_data(folder: Path, size: int, num_labeled: int, num_unlabeled: int, plan_overrides: dict):
    """Synthetic raw dataset + rbmnet plan and preprocessed arrays under `folder`; returns StageInputs."""
    for kind in ("raw", "preprocessed", "results"):
        os.environ[f"RBMNET_{kind.upper()}"] = str(folder / kind)
    from rbmnet.cli.plan_and_preprocess import plan_and_preprocess
    from rbmnet.conversion.synthetic import write_synthetic_dataset
    from rbmnet.training.setup import load_stage_inputs

    write_synthetic_dataset(DATASET, num_labeled=num_labeled, num_unlabeled=num_unlabeled, num_test=0,
                            height=size, width=size, seed=0, num_processes=2, progress=False)
    plan_and_preprocess(DATASET, num_processes=2, overrides=plan_overrides, input_size=[size, size], verbose=False)
    return load_stage_inputs(DATASET, "plans", {})


class PngDataset(torch.utils.data.Dataset):
    """The baseline's data: decode the PNG with PIL and resize it, every time it is asked for."""

    def __init__(self, images: list[Path], labels: list[Path] | None, size: int, masking=None):
        self.images, self.labels, self.size, self.masking = images, labels, size, masking

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from rbmnet.pretexts.random_blocks import block_mask

        image = Image.open(self.images[index]).convert("L").resize((self.size, self.size), Image.BILINEAR)
        image = (np.asarray(image, dtype=np.float32) / 255.0)[None]
        if self.labels is not None:
            label = Image.open(self.labels[index]).resize((self.size, self.size), Image.NEAREST)
            return image, (np.asarray(label) > 0).astype(np.float32)[None]
        if self.masking is not None:
            return image, block_mask((self.size, self.size), self.masking, np.random.default_rng(index))[None]
        return image, image


def endless(loader):
    return itertools.chain.from_iterable(itertools.repeat(loader))


# --- measurements ---------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rbmnet_training(inputs, task: str, device: torch.device, iterations: int, compile_network: bool,
                    data_path: str, num_workers: int) -> dict:
    """Images per second of the real loop: epoch 1 warms up, epoch 2 is measured (its train_seconds)."""
    from dataclasses import replace

    from rbmnet.networks import build_network
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
    from rbmnet.tasks import build_task
    from rbmnet.training.device_batches import batch_source
    from rbmnet.training.distributed import Distributed, training_network
    from rbmnet.training.loop import TrainingRun, train
    from rbmnet.networks.optimization import build_optimizer
    from rbmnet.training.pretext import pretext_batch_loss
    from rbmnet.training.segmentation import seg_batch_loss

    plan = inputs.plan
    stage = plan.pretext if task == "pretext" else plan.segmentation
    names = inputs.data.names("labeled") + (inputs.data.names("unlabeled") if task == "pretext" else [])
    stage = replace(stage, epochs=2, iterations_per_epoch=iterations)
    torch.manual_seed(0)
    seg_task = build_task(plan, inputs.dataset_json) if task == "seg" else None
    network = build_network(plan.network, seg_task.output_channels if seg_task else 1,
                            input_channels=NETWORK_INPUT_CHANNELS).to(device)
    source = batch_source(inputs.data, names, plan, task, plan.seed, device, data_path, num_workers,
                          seg_task=seg_task)
    loss = (functools.partial(pretext_batch_loss, fill_value=plan.masking.fill_value) if task == "pretext" else
            functools.partial(seg_batch_loss, task=seg_task))
    with tempfile.TemporaryDirectory() as folder:
        fast = training_network(network, Distributed(), device, compile_network)
        run = TrainingRun(folder=Path(folder), network=fast,
                          optimizer=build_optimizer(network, stage), device=device, epochs=2,
                          iterations_per_epoch=iterations, make_batch=source.make_batch, batch_loss=loss,
                          validate=lambda net: {}, checkpoint_content={}, num_workers=source.num_workers,
                          is_writer=False)
        log = train(run)
    measured = log.entries[-1]
    return {"images_per_second": measured["train_images_per_second"], "seconds": measured["train_seconds"],
            "warmup_seconds": log.entries[0]["train_seconds"], "data_path": source.choice.path,
            "data_path_reason": source.choice.reason, "batch_size": stage.batch_size,
            "iterations": iterations, "compile": compile_network and device.type == "cuda"}


def baseline_training(inputs, task: str, device: torch.device, iterations: int, batch_size: int,
                      num_workers: int) -> dict:
    """fp32, contiguous, PIL-decoding DataLoader: `iterations` steps after `iterations` warm-up steps."""
    from rbmnet.networks import build_network
    from rbmnet.tasks.losses import dice_bce_loss
    from rbmnet.training.pretext import reconstruction_l1
    from rbmnet.training.pretext import masked_input
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS, network_input

    plan, raw = inputs.plan, inputs.raw_dir
    if task == "pretext":
        images = sorted((raw / "imagesTr").glob("*.png")) + sorted((raw / "imagesUnlabeled").glob("*.png"))
        dataset = PngDataset(images, None, plan.input_size[0], plan.masking)
    else:
        images = sorted((raw / "imagesTr").glob("*.png"))
        dataset = PngDataset(images, [raw / "labelsTr" / p.name for p in images], plan.input_size[0])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                                         drop_last=True, persistent_workers=num_workers > 0)
    torch.manual_seed(0)
    network = build_network(plan.network, 1, input_channels=NETWORK_INPUT_CHANNELS).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    batches = endless(loader)

    def step():
        image, other = (t.to(device) for t in next(batches))
        optimizer.zero_grad()
        if task == "pretext":
            reconstruction = torch.sigmoid(network(masked_input(image, other.bool(), plan.masking.fill_value)))
            loss = reconstruction_l1(reconstruction, image)
        else:
            loss = dice_bce_loss(network(network_input(image)), other)
        loss.backward()
        optimizer.step()

    network.train()
    for _ in range(iterations):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"images_per_second": round(iterations * batch_size / seconds, 2), "seconds": round(seconds, 3),
            "batch_size": batch_size, "iterations": iterations, "num_workers": num_workers}


def rbmnet_prediction(inputs, device: torch.device, batch_size: int, count: int) -> dict:
    from rbmnet.model.forward import predict_arrays
    from rbmnet.networks import build_network
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
    from rbmnet.tasks.binary import BinaryTask
    from rbmnet.model.device import use_fast_kernels

    network = build_network(inputs.plan.network, 1, input_channels=NETWORK_INPUT_CHANNELS)
    network = use_fast_kernels(network.to(device), device)
    images = inputs.data.images
    rows = np.arange(count) % len(images)
    predict_arrays(network, images[rows[:batch_size]], device, BinaryTask(), batch_size)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    predict_arrays(network, images[rows], device, BinaryTask(), batch_size)  # returns numpy: synchronised
    seconds = time.perf_counter() - started
    return {"images_per_second": round(count / seconds, 2), "seconds": round(seconds, 3), "images": count,
            "batch_size": batch_size}


def baseline_prediction(inputs, device: torch.device, batch_size: int, count: int, num_workers: int) -> dict:
    from rbmnet.networks import build_network
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS, network_input

    images = sorted((inputs.raw_dir / "imagesTr").glob("*.png"))
    images = [images[i % len(images)] for i in range(count + batch_size)]
    dataset = PngDataset(images, None, inputs.plan.input_size[0])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    network = build_network(inputs.plan.network, 1, input_channels=NETWORK_INPUT_CHANNELS).to(device).eval()
    batches = iter(loader)
    with torch.no_grad():
        torch.sigmoid(network(network_input(next(batches)[0].to(device)))).cpu()  # warm-up
        started = time.perf_counter()
        done = 0
        for image, _ in batches:
            torch.sigmoid(network(network_input(image.to(device)))).cpu()
            done += len(image)
    seconds = time.perf_counter() - started
    return {"images_per_second": round(done / seconds, 2), "seconds": round(seconds, 3), "images": done,
            "batch_size": batch_size, "num_workers": num_workers}


# --- FLOPs and peaks ------------------------------------------------------------------------------

def flops_per_image(inputs, device: torch.device, batch_size: int) -> dict:
    """FLOPs of one image in a training step (forward + backward) and in prediction (forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    from rbmnet.networks import build_network
    from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS, network_input

    network = build_network(inputs.plan.network, 1, input_channels=NETWORK_INPUT_CHANNELS).to(device)
    image = torch.rand(batch_size, 1, *inputs.plan.input_size, device=device)
    with FlopCounterMode(display=False) as train_counter:
        network(network_input(image)).float().mean().backward()
    network.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as predict_counter:
        network(network_input(image))
    return {"train": train_counter.get_total_flops() / batch_size,
            "predict": predict_counter.get_total_flops() / batch_size}


def device_peak(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_PEAK_BF16:
            if key in name:
                return {"name": name, "flops_per_second": peak, "kind": "bf16 dense tensor-core peak (data sheet)"}
        return {"name": name, "flops_per_second": None, "kind": "unknown GPU"}
    return cpu_peak()


def cpu_peak() -> dict:
    """cores used x clock x fp32 FLOPs per cycle per core (2 FMA units x SIMD lanes x 2): an estimate."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    megahertz = [float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or "cpu")
    if not megahertz or not flags:
        return {"name": name, "flops_per_second": None, "kind": "unknown (no /proc/cpuinfo)"}
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 8
    cores = torch.get_num_threads()
    return {"name": name, "flops_per_second": cores * max(megahertz) * 1e6 * per_cycle,
            "kind": f"estimate: {cores} threads x {max(megahertz):.0f} MHz x {per_cycle} fp32 FLOP/cycle"}


def with_flops(result: dict, flops: float, peak: float | None) -> dict:
    achieved = result["images_per_second"] * flops
    result["tflops_per_second"] = round(achieved / 1e12, 4)
    result["share_of_peak"] = round(achieved / peak, 5) if peak else None
    return result


# --- main -----------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="Square input size (multiple of 16).")
    parser.add_argument("--iterations", type=int, default=20, help="Measured training steps (after as many warm-up).")
    parser.add_argument("--batch-size", type=int, default=None, help="Default: the plan's, from this device's memory.")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile rbmnet's network (CUDA only).")
    parser.add_argument("--data-path", default="auto", choices=("auto", "device", "workers"))
    parser.add_argument("--workers", type=int, default=2, help="CPU workers of both data paths.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary data folder.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from rbmnet.model.device import resolve_device

    device = resolve_device(args.device)
    overrides = {}
    if args.batch_size:
        overrides = {"pretext.batch_size": args.batch_size, "segmentation.batch_size": args.batch_size}
    folder = Path(tempfile.mkdtemp(prefix="rbmnet_throughput_"))
    load_before = os.getloadavg()[0]
    try:
        started = time.perf_counter()
        # enough cases that the planner's batch size is not clamped to the case count
        inputs = prepare_data(folder, args.size, num_labeled=48, num_unlabeled=16, plan_overrides=overrides)
        print(f"data: {time.perf_counter() - started:.0f} s; plan batch sizes "
              f"pretext {inputs.plan.pretext.batch_size}, "
              f"seg {inputs.plan.segmentation.batch_size} ({inputs.plan.derivation['device']})", file=sys.stderr)
        peak = device_peak(device)
        batch = inputs.plan.segmentation.batch_size
        flops = flops_per_image(inputs, device, min(batch, 2))
        results = {}
        for task in ("pretext", "seg"):
            batch = inputs.plan.pretext.batch_size if task == "pretext" else inputs.plan.segmentation.batch_size
            print(f"{task}: rbmnet ...", file=sys.stderr)
            ours = rbmnet_training(inputs, task, device, args.iterations, args.compile, args.data_path, args.workers)
            print(f"{task}: baseline ...", file=sys.stderr)
            plain = baseline_training(inputs, task, device, args.iterations, batch, args.workers)
            results[task] = {"rbmnet": with_flops(ours, flops["train"], peak["flops_per_second"]),
                             "baseline": with_flops(plain, flops["train"], peak["flops_per_second"]),
                             "ratio": round(ours["images_per_second"] / plain["images_per_second"], 3)}
        count = args.iterations * batch
        print("predict ...", file=sys.stderr)
        ours = rbmnet_prediction(inputs, device, batch, count)
        plain = baseline_prediction(inputs, device, batch, count, args.workers)
        results["predict"] = {"rbmnet": with_flops(ours, flops["predict"], peak["flops_per_second"]),
                              "baseline": with_flops(plain, flops["predict"], peak["flops_per_second"]),
                              "ratio": round(ours["images_per_second"] / plain["images_per_second"], 3)}
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report = {
        "size": [args.size, args.size], "network": inputs.plan.network.architecture,
        "features_per_stage": inputs.plan.network.features_per_stage, "device": str(device), "peak": peak,
        "gflops_per_image": {k: round(v / 1e9, 2) for k, v in flops.items()},
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "results": results, "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written: {args.output}")
    return report


def print_table(report: dict) -> None:
    peak = report["peak"]
    peak_text = f"{peak['flops_per_second'] / 1e12:.1f} TFLOP/s" if peak["flops_per_second"] else "unknown"
    print(f"\n{report['network']} at {report['size'][0]}x{report['size'][1]} on {report['device']} ({peak['name']}; "
          f"peak {peak_text}, {peak['kind']})")
    print(f"{'':10}{'rbmnet img/s':>14}{'baseline img/s':>16}{'ratio':>8}{'rbmnet TFLOP/s':>16}"
          f"{'share of peak':>15}{'baseline share':>16}")
    for task, row in report["results"].items():
        ours, plain = row["rbmnet"], row["baseline"]
        share = lambda r: "-" if r["share_of_peak"] is None else f"{100 * r['share_of_peak']:.2f} %"  # noqa: E731
        print(f"{task:10}{ours['images_per_second']:>14.2f}{plain['images_per_second']:>16.2f}{row['ratio']:>8.2f}"
              f"{ours['tflops_per_second']:>16.4f}{share(ours):>15}{share(plain):>16}")


if __name__ == "__main__":
    main()
