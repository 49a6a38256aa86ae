"""The rows of a benchmark: named training recipes ("arms").

An arm is an architecture, an initialisation (scratch or the pretext model its masking scheme trains)
and plan overrides of its own. The paper's rows are the four baselines from scratch and RBM + Modified
ResUNet; the few-label arms add encoder-only transfer with a warm-up, fine-grained masking and
semi-supervision (docs/few_labels.md). An arm's overrides may depend on the plan it starts from (the
warm-up is a share of the epochs), so arms are resolved against that plan once, which also fixes the
parts of the model id that training will write (initialisation and fine-tuning tags).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from rbmnet.errors import RbmnetError
from rbmnet.model.folder import INIT_TAGS, fine_tuning_tag
from rbmnet.planning.plan import Plan, apply_overrides
from rbmnet.pretexts import masking_scheme

RBM_ARCHITECTURE = "resunet"  # the paper pretrains its Modified ResUNet
WARMUP_SHARE = 0.2  # of the segmentation epochs, for the warm-up arms (at least 1 when there are 3 or more)
PRETEXT_SECTIONS_OF_ARM = ("masking.", "pretext.")  # arm overrides that change the pretext model too


def no_overrides(plan: Plan) -> dict:
    return {}


def warmup_epochs(plan: Plan) -> int:
    return round(WARMUP_SHARE * plan.segmentation.epochs)


def encoder_with_warmup(plan: Plan, masking: str | None = None) -> dict:
    overrides = {"segmentation.transfer": "encoder", "segmentation.warmup_epochs": warmup_epochs(plan)}
    return overrides | ({"masking.scheme": masking} if masking else {})


@dataclass(frozen=True)
class ModelSpec:
    name: str  # row label of the table
    architecture: str
    init: str  # "scratch" or "pretext" (rbmnet_train seg --init)
    recipe: Callable[[Plan], dict] = no_overrides  # the arm's plan overrides, given the grid's plan
    # filled by resolve_arm: the arm's overrides and the model-id parts training will write
    overrides: tuple[tuple[str, object], ...] = ()
    init_tag: str = ""
    fine_tuning_tag: str = ""
    pretext_id_tag: str = ""  # of the pretext model a pretext-initialised arm starts from

    @property
    def override_dict(self) -> dict:
        return dict(self.overrides)

    @property
    def pretext_overrides(self) -> dict:
        return {k: v for k, v in self.overrides if k.startswith(PRETEXT_SECTIONS_OF_ARM)}


BASELINES = {
    "unet": ModelSpec("U-Net", "unet", "scratch"),
    "pspnet": ModelSpec("PSPNet", "pspnet", "scratch"),
    "linknet": ModelSpec("LinkNet", "linknet", "scratch"),
    "resunet": ModelSpec("Modified ResUNet", "resunet", "scratch"),
}
RBM_MODEL = ModelSpec("RBM + Modified ResUNet", RBM_ARCHITECTURE, "pretext")
REFERENCE_NAME = BASELINES["resunet"].name  # what the paired differences compare against (from scratch)
FEW_LABEL_ARMS = {
    # the warm-up alone, from scratch: separates what the pretext weights bring from what the warm-up does
    "scratch_warmup": ModelSpec("scratch + warm-up", "resunet", "scratch",
                                lambda plan: {"segmentation.warmup_epochs": warmup_epochs(plan)}),
    "rbm_encoder": ModelSpec("RBM, encoder + warm-up", RBM_ARCHITECTURE, "pretext", encoder_with_warmup),
    "grid_encoder": ModelSpec("fine-grained masking, encoder + warm-up", RBM_ARCHITECTURE, "pretext",
                              lambda plan: encoder_with_warmup(plan, masking="grid")),
    "mean_teacher": ModelSpec("mean teacher (scratch)", RBM_ARCHITECTURE, "scratch",
                              lambda plan: {"segmentation.semi_supervised": "mean_teacher"}),
    "mean_teacher_rbm_encoder": ModelSpec("mean teacher (RBM, encoder + warm-up)", RBM_ARCHITECTURE, "pretext",
                                          lambda plan: encoder_with_warmup(plan)
                                          | {"segmentation.semi_supervised": "mean_teacher"}),
    "mean_teacher_grid_encoder": ModelSpec("mean teacher (fine-grained masking, encoder + warm-up)",
                                           RBM_ARCHITECTURE, "pretext",
                                           lambda plan: encoder_with_warmup(plan, masking="grid")
                                           | {"segmentation.semi_supervised": "mean_teacher"}),
}
MODEL_ORDER = ([spec.name for spec in BASELINES.values()] + [RBM_MODEL.name]  # the paper's row order
               + [spec.name for spec in FEW_LABEL_ARMS.values()])


def select_models(architectures: list[str], rbm: bool, arms: list[str] = ()) -> list[ModelSpec]:
    unknown = [a for a in architectures if a not in BASELINES]
    if unknown:
        raise RbmnetError(f"--archs: unknown architecture(s) {', '.join(unknown)} (known: {', '.join(BASELINES)})")
    unknown = [a for a in arms if a not in FEW_LABEL_ARMS]
    if unknown:
        raise RbmnetError(f"--arms: unknown arm(s) {', '.join(unknown)} (known: {', '.join(FEW_LABEL_ARMS)})")
    models = ([BASELINES[a] for a in dict.fromkeys(architectures)] + ([RBM_MODEL] if rbm else [])
              + [FEW_LABEL_ARMS[a] for a in dict.fromkeys(arms)])
    if not models:
        raise RbmnetError("nothing to benchmark: --archs and --arms are empty and --no-rbm given")
    return sorted(models, key=lambda spec: MODEL_ORDER.index(spec.name))


def resolve_arm(model: ModelSpec, plan: Plan) -> ModelSpec:
    """The arm with its overrides for `plan` (the grid's, with the user's overrides) and the model-id tags
    rbmnet_train seg will write for it; a bad override fails here, before anything trains."""
    overrides = model.recipe(plan)
    arm_plan = apply_overrides(plan, overrides) if overrides else plan
    scheme = masking_scheme(arm_plan.masking.scheme)
    pretrained = model.init == "pretext"
    return replace(model, overrides=tuple(sorted(overrides.items())),
                   init_tag=scheme.init_tag if pretrained else INIT_TAGS["scratch"],
                   fine_tuning_tag=fine_tuning_tag(arm_plan.segmentation, pretrained),
                   pretext_id_tag=scheme.pretext_id_tag)
