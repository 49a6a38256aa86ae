"""The plan: ONE set of choices that pretext and segmentation training both read (every key: docs/plan.md).

Plain dataclasses mirrored 1:1 by plans.json. Every field can be overridden from the command line
with `--set dotted.key=value` (see `apply_overrides`), so no knob needs code to change.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rbmnet.errors import RbmnetError
from rbmnet.io.atomic import write_json
from rbmnet.layout import DEFAULT_PLANS_NAME, configuration_name

PLAN_FORMAT_VERSION = 1

# Keys an older rbmnet wrote that no longer exist, with the reason: the loader drops each with a one-line
# note, so old plans.json files and checkpoints keep loading. A key that was never known stays an error.
REMOVED_KEYS = {
    "augmentation.num_workers": "the worker count is rbmnet_train -np",
    "network.input_channels": "the network input is always the radiograph + its Sobel magnitude, 2 channels",
}
# keys that only decide how a run is launched, never what a trained model is: where a fold starts
# without --init (the model id names the start it took). Runs of one model, a continued run and a
# benchmark's finished cell compare plans without them, so changing such a default never strands
# a trained model.
LAUNCH_ONLY_KEYS = ("segmentation.initialisation",)


NORMALIZATION_SCHEMES = ("percentile_minmax",)  # preprocessing/transforms.py applies them
# where training batches are made (training/device_batches.py decides "auto")
DATA_PATHS = ("auto", "device", "workers")


@dataclass
class NormalizationConfig:
    # Per-image percentile clipping then scaling to [0, 1]: robust to exposure differences between
    # machines, and [0, 1] is the data range the pretext metrics (SSIM, PSNR) assume.
    scheme: str = "percentile_minmax"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5


@dataclass
class NetworkConfig:
    architecture: str = "resunet"
    features_per_stage: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    dropout: float = 0.0

    @property
    def total_downsampling(self) -> int:
        return 2 ** (len(self.features_per_stage) - 1)


@dataclass
class MaskingConfig:
    # "random_blocks" (the paper's Random Block Masking: the keys below up to max_aspect_ratio) or
    # "grid" (fine-grained: mask_ratio of the cells of a grid as coarse as the network's downsampling)
    scheme: str = "random_blocks"
    mask_ratio: float = 0.6
    min_blocks: int = 2
    max_blocks: int = 5
    block_area_fraction: float = 0.15
    fill_value: float = 0.0
    max_aspect_ratio: float = 2.0  # blocks are rectangles whose sides differ at most by this factor


@dataclass
class StageConfig:
    epochs: int = 80
    iterations_per_epoch: int = 50
    batch_size: int = 8
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "constant"  # or "poly"
    warmup_epochs: int = 0  # linear learning-rate warm-up over these epochs, then lr_schedule over the rest
    validation_fraction: float = 0.1  # pretext only: seeded share of images kept for validation


@dataclass
class SegmentationConfig(StageConfig):
    fraction: float = 0.2
    task: str = "binary"  # "binary" (label > 0) or "teeth" (tooth numbers); the planner picks from dataset.json
    # teeth only: "classes" (one channel per tooth) or "factorized" (tooth + quadrant + position);
    # classes measured better at the CPU budget (docs/tasks.md, Evidence)
    numbering_head: str = "classes"
    dice_weight: float = 0.7
    bce_weight: float = 0.3  # the cross-entropy's weight for the teeth task
    threshold: float = 0.5  # on the tooth probability (binary task and the factorized head)
    # where a fold starts without --init: "scratch"; "pretext" = the pretext model the masking scheme
    # trains, once it exists (else scratch). rbmnet_train seg --init overrides it. Scratch because no
    # pretraining arm beat it with few labels on real panoramics (docs/few_labels.md, Evidence)
    initialisation: str = "scratch"
    # starting from pretext weights: "full" = every tensor but the output head, "encoder" = the encoder
    # only (the decoder starts fresh); transferred tensors train at transferred_lr_factor x learning_rate
    transfer: str = "full"
    transferred_lr_factor: float = 1.0
    # "mean_teacher": the images of the fold's training cases outside `fraction` (labels never read) and
    # the dataset's unlabeled images also train, through consistency with an EMA teacher (docs/semi_supervised.md)
    semi_supervised: str = "off"
    consistency_weight: float = 1.0  # of the consistency loss at full strength, beside the supervised loss
    consistency_rampup: float = 0.4  # share of the steps over which that weight ramps up from 0
    ema_decay: float = 0.99  # the teacher's exponential moving average of the student's weights


@dataclass
class AugmentationConfig:
    rotation_degrees: float = 10.0
    scale_range: list[float] = field(default_factory=lambda: [0.9, 1.1])
    elastic: bool = False
    mirror: bool = True  # left-right: a panoramic is roughly symmetric
    # teeth: a left-right flip gives each tooth its contralateral number; false = naive flips (ablation only)
    laterality_swap: bool = True
    gamma_range: list[float] = field(default_factory=lambda: [0.7, 1.5])
    brightness_range: list[float] = field(default_factory=lambda: [0.8, 1.2])
    contrast_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    noise_variance: list[float] = field(default_factory=lambda: [0.0, 0.002])
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.0])
    probability: float = 0.2  # per-transform probability for the intensity transforms
    # where training batches are made: "device" (dataset resident on the GPU, augmented there),
    # "workers" (batchgenerators in CPU processes) or "auto" (device when the data fit; see device_batches.py)
    data_path: str = "auto"


@dataclass
class Plan:
    dataset_name: str
    plans_name: str = DEFAULT_PLANS_NAME
    input_size: list[int] = field(default_factory=lambda: [512, 512])  # [height, width]
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    pretext: StageConfig = field(default_factory=StageConfig)
    segmentation: SegmentationConfig = field(default_factory=lambda: SegmentationConfig(epochs=100))
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    seed: int = 12345
    derivation: dict = field(default_factory=dict)  # how the numbers above were derived (budget, device)
    format_version: int = PLAN_FORMAT_VERSION

    @property
    def configuration(self) -> str:
        """Name of the preprocessed-data folder: cases resized to the input size."""
        height, width = self.input_size
        return configuration_name(height, width)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "plan") -> "Plan":
        from rbmnet.planning.validation import validate_plan  # it reads the name registries (tasks, networks)

        plan = _build(cls, data, source)
        validate_plan(plan, source)
        return plan


def _build(cls, data: dict, where: str, prefix: str = ""):
    if not isinstance(data, dict):
        raise RbmnetError(f"{where}: expected an object, got {type(data).__name__}")
    data = {name: value for name, value in data.items() if not _removed(prefix + name)}
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RbmnetError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_type(cls, name)
        kwargs[name] = _build(sub, value, f"{where}.{name}", f"{prefix}{name}.") if sub else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise RbmnetError(f"{where}: {exc}") from None


def _removed(key: str) -> bool:
    """True for a key in REMOVED_KEYS, after a one-line note (shown once per process by warnings' default filter)."""
    if key not in REMOVED_KEYS:
        return False
    warnings.warn(f"note: plans.json key {key} is no longer used ({REMOVED_KEYS[key]}); ignored")
    return True


_NESTED = {
    "normalization": NormalizationConfig,
    "network": NetworkConfig,
    "masking": MaskingConfig,
    "pretext": StageConfig,
    "segmentation": SegmentationConfig,
    "augmentation": AugmentationConfig,
}


def _dataclass_type(cls, name: str):
    return _NESTED.get(name) if cls is Plan else None


def save_plan(plan: Plan, path: str | Path) -> None:
    from rbmnet.planning.validation import validate_plan

    validate_plan(plan, str(path))
    write_json(path, plan.to_dict())


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise RbmnetError(f"{path}: plan missing; run rbmnet_plan_and_preprocess first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RbmnetError(f"{path}: not valid JSON ({exc})") from None
    return Plan.from_dict(data, source=str(path))


def parse_override(text: str) -> tuple[str, object]:
    """'segmentation.epochs=5' -> ('segmentation.epochs', 5); values are JSON, else strings."""
    if "=" not in text:
        raise RbmnetError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def apply_overrides(plan: Plan, overrides: dict[str, object]) -> Plan:
    """Return a new plan with dotted keys replaced; unknown keys are an error, types are checked."""
    data = copy.deepcopy(plan.to_dict())
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise RbmnetError(f"override '{key}': '{part}' is not a section of the plan")
            node = node[part]
        leaf = parts[-1]
        if key in REMOVED_KEYS:
            raise RbmnetError(f"override '{key}': no longer a plan key ({REMOVED_KEYS[key]})")
        if leaf not in node:
            raise RbmnetError(f"override '{key}': no such plan key")
        old = node[leaf]
        if isinstance(old, bool) != isinstance(value, bool) or (
            isinstance(old, (int, float)) and not isinstance(value, (int, float))
        ) or (isinstance(old, list) and not isinstance(value, list)):
            raise RbmnetError(f"override '{key}': expected a value like {json.dumps(old)}, got {json.dumps(value)}")
        if isinstance(old, float) and isinstance(value, int):
            value = float(value)
        node[leaf] = value
    return Plan.from_dict(data, source="--set")
