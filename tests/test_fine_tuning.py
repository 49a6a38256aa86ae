"""The fine-tuning recipe: learning-rate warm-up, encoder-only transfer, a rate of its own for
transferred tensors, and their checks."""
from __future__ import annotations

import pytest
import torch

from rbmnet.errors import RbmnetError
from rbmnet.model.checkpoint import save_checkpoint
from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
from rbmnet.networks import build_network
from rbmnet.networks.optimization import build_optimizer, learning_rate_factor, set_learning_rate
from rbmnet.planning.plan import NetworkConfig, Plan, apply_overrides
from rbmnet.training.initialisation import load_pretrained, transferred_tensors

WIDTHS = [4, 8, 16, 32, 64]


def test_warm_up_is_linear_then_the_schedule_runs_over_the_remaining_epochs():
    factors = [learning_rate_factor("poly", epoch, 10, warmup_epochs=2) for epoch in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[9] == pytest.approx((1 - 7 / 8) ** 0.9)
    assert factors == [learning_rate_factor("poly", e, 10, 2) for e in range(10)]  # pure
    assert [learning_rate_factor("constant", e, 4) for e in range(4)] == [1.0] * 4  # no warm-up: as before


def network():
    torch.manual_seed(0)
    return build_network(NetworkConfig(features_per_stage=WIDTHS), 1, input_channels=NETWORK_INPUT_CHANNELS)


def test_transferred_tensors_train_at_their_own_rate():
    net = network()
    names = {n for n, _ in net.named_parameters()}
    encoder = transferred_tensors(names, "encoder", "resunet")
    assert encoder and all(n.startswith(("encoder.", "bridge.")) for n in encoder)
    assert not any(n.startswith(("decoder.", "head.")) for n in encoder)
    assert transferred_tensors(names, "full", "resunet") == {n for n in names if not n.startswith("head.")}
    plan = Plan(dataset_name="x")
    optimizer = build_optimizer(net, plan.segmentation, encoder, transferred_lr_factor=0.1)
    set_learning_rate(optimizer, 1e-3, "constant", 0, 5)
    by_rate = {group["lr"]: sum(p.numel() for p in group["params"]) for group in optimizer.param_groups}
    assert by_rate == pytest.approx({1e-4: sum(p.numel() for n, p in net.named_parameters() if n in encoder),
                                     1e-3: sum(p.numel() for n, p in net.named_parameters() if n not in encoder)})
    assert len(build_optimizer(net, plan.segmentation, encoder).param_groups) == 1  # factor 1: one group


def pretext_checkpoint(tmp_path):
    source = network()
    for tensor in source.state_dict().values():  # weights no fresh network has
        if tensor.is_floating_point():
            tensor.add_(1.0)
    plan = Plan(dataset_name="x", network=NetworkConfig(features_per_stage=WIDTHS))
    path = tmp_path / "pretext.pt"
    save_checkpoint(path, source, torch.optim.Adam(source.parameters()), 1, [], plan.to_dict(), {}, {})
    return source, plan, path


def test_encoder_transfer_loads_the_encoder_and_leaves_the_decoder_fresh(tmp_path):
    source, plan, path = pretext_checkpoint(tmp_path)
    target = build_network(plan.network, 3, input_channels=NETWORK_INPUT_CHANNELS)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_pretrained(target, path, plan.to_dict()["network"], transfer="encoder")
    state = target.state_dict()
    encoder = transferred_tensors(state, "encoder", "resunet")
    assert report.loaded == len(encoder)
    for name in state:
        expected = source.state_dict()[name] if name in encoder else fresh[name]
        assert torch.equal(state[name], expected), name
    assert any("decoder starts fresh" in why for why in report.skipped.values())


def test_a_checkpoint_that_does_not_fit_names_both_shapes(tmp_path):
    source, plan, path = pretext_checkpoint(tmp_path)
    checkpoint = torch.load(path, weights_only=True)
    name = next(n for n in checkpoint["network"] if n.startswith("encoder.") and n.endswith("weight"))
    checkpoint["network"][name] = torch.zeros(3, 3)
    torch.save(checkpoint, path)
    target = build_network(plan.network, 3, input_channels=NETWORK_INPUT_CHANNELS)
    with pytest.raises(RbmnetError) as error:
        load_pretrained(target, path, plan.to_dict()["network"], transfer="encoder")
    message = str(error.value)
    assert name in message and "(3, 3) in the checkpoint vs" in message and "\n" not in message


@pytest.mark.parametrize("override, problem", [
    ({"segmentation.warmup_epochs": 5, "segmentation.epochs": 5}, "must be below segmentation.epochs"),
    ({"pretext.warmup_epochs": -1}, "must be >= 0"),
    ({"segmentation.transfer": "decoder"}, "must be one of full, encoder"),
    ({"segmentation.transferred_lr_factor": 0}, "must be in (0, 10]"),
])
def test_recipe_values_are_checked_when_the_plan_is_built(override, problem):
    with pytest.raises(RbmnetError, match=problem.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        apply_overrides(Plan(dataset_name="x"), override)


def test_the_plan_says_where_a_fold_starts_and_init_overrides_it(tmp_path, monkeypatch):
    """segmentation.initialisation: 'pretext' once the pretext model exists, 'scratch' regardless."""
    from rbmnet.training.segmentation import resolve_initialisation

    monkeypatch.setenv("RBMNET_RESULTS", str(tmp_path))
    assert resolve_initialisation(None, "D", "resunet", "plans", planned="pretext") == ("scratch", None)
    final = tmp_path / "D" / "pretext__resunet__plans" / "checkpoint_final.pt"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"")
    assert resolve_initialisation(None, "D", "resunet", "plans", planned="pretext") == ("rbm", final)
    assert resolve_initialisation(None, "D", "resunet", "plans", planned="scratch") == ("scratch", None)
    assert resolve_initialisation("pretext", "D", "resunet", "plans", planned="scratch") == ("rbm", final)
    with pytest.raises(RbmnetError, match="no finished pretext training"):
        resolve_initialisation("pretext", "D", "resunet", "plans", masking_name="grid")
    with pytest.raises(RbmnetError, match="segmentation.initialisation"):
        apply_overrides(Plan(dataset_name="x"), {"segmentation.initialisation": "imagenet"})


def test_by_default_a_fold_starts_from_scratch_and_says_how_to_use_a_trained_pretext_model(tmp_path, monkeypatch):
    """Scratch is the default (no pretraining arm beat it with few labels, docs/few_labels.md); a trained
    pretext model that the default leaves unused is named, with the flag that uses it."""
    from rbmnet.training.segmentation import resolve_initialisation, unused_pretext_hint

    monkeypatch.setenv("RBMNET_RESULTS", str(tmp_path))
    planned = Plan(dataset_name="D").segmentation.initialisation
    assert planned == "scratch"
    assert unused_pretext_hint(None, "D", "resunet", "plans", "random_blocks") == ""
    final = tmp_path / "D" / "pretext__resunet__plans" / "checkpoint_final.pt"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"")
    assert resolve_initialisation(None, "D", "resunet", "plans", planned=planned) == ("scratch", None)
    hint = unused_pretext_hint(None, "D", "resunet", "plans", "random_blocks")
    assert "pretext__resunet__plans is not used" in hint and "--init pretext" in hint
    assert unused_pretext_hint("scratch", "D", "resunet", "plans", "random_blocks") == ""  # asked for: no hint
    assert unused_pretext_hint(None, "D", "resunet", "plans", "grid") == ""  # that scheme's model is not trained
