"""Training speeds the time planner works from: what one configuration costs on one device.

A `SpeedCase` names a configuration (input size, widths, batch, output channels of the task); a
`Speed` holds what it costs, measured by training/speed_probe.py on the planning device, read from
a file (`--speed-from`), or assumed from ASSUMED_GPU (then every prediction says it is not measured).
Measured speeds are cached per machine (`speed_cache_file`), keyed by device, torch version, threads
and the configuration, so re-planning is instant and a changed key measures again.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json

CACHE_VARIABLE = "RBMNET_CACHE"
CACHE_FORMAT_VERSION = 2
KEY_SEPARATOR = " :: "  # between the machine (device|torch|threads) and the configuration in a key


@dataclass(frozen=True)
class SpeedCase:
    input_size: tuple[int, int]
    features_per_stage: tuple[int, ...]
    seg_batch_size: int
    pretext_batch_size: int
    output_channels: int  # the segmentation task's head

    def key(self, machine: str) -> str:
        return machine + KEY_SEPARATOR + self.describe()

    def describe(self) -> str:
        """The configuration part of a key: '256x256|features [...]|batch seg 4 pretext 4|channels 33'."""
        return (f"{self.input_size[0]}x{self.input_size[1]}|features {list(self.features_per_stage)}|"
                f"batch seg {self.seg_batch_size} pretext {self.pretext_batch_size}|channels {self.output_channels}")


@dataclass
class Speed:
    seg_step_seconds: float  # forward + backward + Adam step of one segmentation batch
    pretext_step_seconds: float  # the same for one pretext batch (reconstruction head)
    seg_batch_seconds: float  # making one augmented batch on the CPU (0 when the GPU makes them)
    pretext_batch_seconds: float
    eval_seconds_per_image: float  # forward without gradients (per-epoch validation, the fold report)
    seg_report_seconds_per_megapixel: float  # fold report per case beyond the forward: resize, decode, metrics
    pretext_report_seconds_per_image: float  # pretext report per held-out image: SSIM, FSIM, LPIPS
    source: str  # "measured on <machine>", "from FILE", or "assumed ..."

    @property
    def measured(self) -> bool:
        return self.source.startswith("measured")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> "Speed":
        try:
            values = {name: float(data[name]) for name in cls.__dataclass_fields__ if name != "source"}
        except (KeyError, TypeError, ValueError) as exc:
            raise RbmnetError(f"speed entry lacks a number for {exc}") from None
        return cls(**values, source=source or str(data.get("source", "unknown")))


# A GPU that is not on this machine (`--gpu-memory-gb` without `--speed-from`): rough costs per image,
# per megapixel of input and unit of width (planning/time_candidates.width_units: the paper's widths = 1),
# NOT measured by rbmnet; a plan from them says so. From arithmetic, not a run: the full-width ResUNet
# does about 70 GMAC per 512 x 512 image forward, ~0.4 TFLOP with the backward pass; a current
# data-centre GPU sustaining ~150 bf16 TFLOP/s on such convolutions trains ~350 images/s, i.e.
# 0.011 s per image-megapixel; a forward alone costs about a third.
ASSUMED_GPU = {"step_seconds_per_megapixel_width": 0.011, "eval_seconds_per_megapixel_width": 0.004,
               "seg_report_seconds_per_megapixel": 0.2, "pretext_report_seconds_per_image": 0.3}


def assumed_gpu_speed(case: SpeedCase, width_units: float) -> Speed:
    megapixels = case.input_size[0] * case.input_size[1] / 1e6
    per_sample = ASSUMED_GPU["step_seconds_per_megapixel_width"] * megapixels * width_units
    return Speed(seg_step_seconds=per_sample * case.seg_batch_size,
                 pretext_step_seconds=per_sample * case.pretext_batch_size,
                 seg_batch_seconds=0.0, pretext_batch_seconds=0.0,
                 eval_seconds_per_image=ASSUMED_GPU["eval_seconds_per_megapixel_width"] * megapixels * width_units,
                 seg_report_seconds_per_megapixel=ASSUMED_GPU["seg_report_seconds_per_megapixel"],
                 pretext_report_seconds_per_image=ASSUMED_GPU["pretext_report_seconds_per_image"],
                 source="assumed for an unmeasured GPU (docs/time_budget.md), not measured")


def speed_cache_file() -> Path:
    """$RBMNET_CACHE/speeds.json, else $XDG_CACHE_HOME/rbmnet/speeds.json, else ~/.cache/rbmnet/speeds.json."""
    folder = os.environ.get(CACHE_VARIABLE)
    if not folder:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rbmnet"
    return Path(folder).expanduser() / "speeds.json"


class SpeedCache:
    """Measured speeds by key; a missing, unreadable or foreign-format file is an empty cache."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else speed_cache_file()
        self.entries: dict[str, dict] = {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("format_version") == CACHE_FORMAT_VERSION and isinstance(data.get("speeds"), dict):
                self.entries = data["speeds"]
        except (OSError, ValueError, AttributeError):
            pass

    def get(self, key: str) -> Speed | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        try:
            return Speed.from_dict(entry)
        except RbmnetError:
            return None

    def put(self, key: str, speed: Speed) -> None:
        self.entries[key] = speed.to_dict()
        try:  # a read-only home only costs the next planning a new measurement
            write_json(self.path, {"format_version": CACHE_FORMAT_VERSION, "speeds": self.entries})
        except (OSError, RbmnetError):
            pass


def load_speed_file(path: str | Path) -> dict[str, Speed]:
    """`--speed-from FILE`: a speeds.json cache copied from the training machine (its keys name the
    configuration, so the planner uses the entries that match its candidates)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        entries = data["speeds"]
        if not isinstance(entries, dict):
            raise TypeError
    except OSError as exc:
        raise RbmnetError(f"{path}: cannot read the speed file ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError):
        raise RbmnetError(f"{path}: not a speed file (expected the speeds.json that rbmnet_plan_and_preprocess "
                          f"writes, with a 'speeds' object)") from None
    return {key: Speed.from_dict(entry, source=f"from {path} ({entry.get('source', 'unknown')})")
            for key, entry in entries.items()}


def case_part(key: str) -> str:
    """The configuration part of a key (everything after the machine), to match file entries."""
    return key.split(KEY_SEPARATOR, 1)[-1]
