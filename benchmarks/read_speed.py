"""Reading one preprocessed case vs decoding its source files (the store must be >= 10x faster).

    .venv/bin/python benchmarks/read_speed.py -d NAME [-p plans] [--cases 50]

Run rbmnet_plan_and_preprocess first. Both sides read the same cases, each several times; the files
are in the page cache either way, so the comparison is decoding (PNG/JPEG) against slicing a memory
map. Writes benchmarks/results/read_speed.json and prints both timings.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click

from rbmnet.cli.common import dataset_option, friendly_errors, plans_option
from rbmnet.data.checks import inventory_dataset
from rbmnet.io.atomic import write_json
from rbmnet.io.images import read_image, read_label
from rbmnet.paths import preprocessed_dataset_dir, raw_dataset_dir, resolve_dataset_name
from rbmnet.planning.plan import load_plan
from rbmnet.preprocessing.store import PreprocessedDataset, configuration_dir

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "read_speed.json"


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(dataset: str, plans_name: str = "plans", num_cases: int = 50, repeats: int = 5) -> dict:
    name = resolve_dataset_name(dataset)
    plan = load_plan(preprocessed_dataset_dir(name) / f"{plans_name}.json")
    store = PreprocessedDataset(configuration_dir(preprocessed_dataset_dir(name), plan.configuration))
    store.check_matches(plan)
    raw = raw_dataset_dir(name)
    records = store.cases[:num_cases]
    label_sources = {case: label for case, _, label in inventory_dataset(name).labeled}

    def decode(record):
        image = read_image(raw / record.source)
        label = read_label(label_sources[record.name]) if record.label_index is not None else None
        return image, label

    def load(record):
        image = store.image(record.name)
        label = store.label(record.name) if record.label_index is not None else None
        return image, label

    decode_times = [_median_seconds(lambda r=r: decode(r), repeats) for r in records]
    load_times = [_median_seconds(lambda r=r: load(r), repeats) for r in records]
    decode_ms = 1000 * statistics.mean(decode_times)
    load_ms = 1000 * statistics.mean(load_times)
    return {"dataset": name, "configuration": plan.configuration, "cases": len(records), "repeats": repeats,
            "decode_source_ms_per_case": round(decode_ms, 4), "read_preprocessed_ms_per_case": round(load_ms, 4),
            "speedup": round(decode_ms / load_ms, 1),
            "what": "image + label (labeled cases) per case; source decoded with rbmnet.io.images, "
                    "preprocessed read from the memory maps as float32 / uint8 arrays"}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@dataset_option
@plans_option
@click.option("--cases", "num_cases", default=50, show_default=True, help="Cases to time (the first ones).")
@click.option("--repeats", default=5, show_default=True, help="Timings per case (median taken).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_OUTPUT,
              show_default=True)
@friendly_errors
def main(dataset, plans_name, num_cases, repeats, output):
    result = measure(dataset, plans_name, num_cases, repeats)
    write_json(output, result)
    click.echo(f"decode source:     {result['decode_source_ms_per_case']:.3f} ms per case")
    click.echo(f"read preprocessed: {result['read_preprocessed_ms_per_case']:.3f} ms per case")
    click.echo(f"speedup: {result['speedup']}x over {result['cases']} cases ({output})")
    if result["speedup"] < 10:
        sys.exit(1)


if __name__ == "__main__":
    main()
