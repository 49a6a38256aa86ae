"""Networks: shapes for planner sizes, gradient flow, the `head` contract, the ResUNet's concatenated first BN."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rbmnet.errors import RbmnetError
from rbmnet.model.sobel import NETWORK_INPUT_CHANNELS
from rbmnet.networks import ARCHITECTURES, build_network
from rbmnet.networks.resunet import ConcatResidualBlock
from rbmnet.planning.plan import NetworkConfig

SMALL = [8, 16, 32, 64, 128]
NAMES = sorted(ARCHITECTURES)


def small_config(name: str = "resunet", **changes) -> NetworkConfig:
    return NetworkConfig(architecture=name, features_per_stage=list(SMALL), **changes)


def test_registry_is_the_four_named_architectures():
    assert set(ARCHITECTURES) == {"resunet", "unet", "linknet", "pspnet"}
    for name, arch in ARCHITECTURES.items():
        assert arch.name == name and arch.description and "\n" not in arch.description


@pytest.mark.parametrize("name", NAMES)
def test_output_is_full_size_logits_for_planner_sizes(name):
    torch.manual_seed(0)
    model = build_network(small_config(name), output_channels=3, input_channels=NETWORK_INPUT_CHANNELS).eval()
    with torch.no_grad():
        for height, width in [(32, 32), (32, 64), (64, 32), (48, 80)]:
            out = model(torch.rand(1, 2, height, width))
            assert out.shape == (1, 3, height, width), (name, height, width)
            assert torch.isfinite(out).all()


# median image shapes of dental sets: UFBA-425 (512 x 512), panoramic 2:1, cephalometric, periapical
# (portrait), bitewing, a tiny odd one; the planner scales each to its longer side and rounds to 16
MEDIAN_SHAPES = [(512, 512), (1100, 2200), (2400, 1935), (640, 480), (576, 768), (37, 91)]


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_for_sizes_the_planner_emits(name):
    from rbmnet.planning.planner import plan_input_size

    config = small_config(name)
    model = build_network(config, output_channels=1, input_channels=NETWORK_INPUT_CHANNELS).eval()
    sizes = {tuple(plan_input_size(shape, config.total_downsampling, max_side=160)) for shape in MEDIAN_SHAPES}
    assert (160, 160) in sizes and (80, 160) in sizes and (160, 128) in sizes  # aspect kept
    with torch.no_grad():
        for height, width in sorted(sizes):
            assert model(torch.rand(1, 2, height, width)).shape == (1, 1, height, width), (name, height, width)


def test_architecture_argument_overrides_config():
    assert type(build_network(small_config("resunet"), 1, architecture="unet",
                              input_channels=NETWORK_INPUT_CHANNELS)).__name__ == "UNet"
    assert type(build_network(small_config("pspnet"), 1, input_channels=NETWORK_INPUT_CHANNELS)).__name__ == "PSPNet"


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_network(small_config(name, dropout=0.1), output_channels=1,
                          input_channels=NETWORK_INPUT_CHANNELS).train()
    target = (torch.rand(2, 1, 32, 48) > 0.5).float()
    loss = F.binary_cross_entropy_with_logits(model(torch.rand(2, 2, 32, 48)), target)
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: {param_name} got no gradient"
        assert param.grad.abs().sum() > 0, f"{name}: {param_name} gradient is all zero"


@pytest.mark.parametrize("name", NAMES)
def test_head_prefix_is_exactly_the_final_1x1_conv(name):
    model = build_network(small_config(name), output_channels=2, input_channels=NETWORK_INPUT_CHANNELS).eval()
    head_keys = {k for k in model.state_dict() if k.startswith("head.")}
    assert head_keys == {"head.weight", "head.bias"}
    assert isinstance(model.head, torch.nn.Conv2d) and model.head.kernel_size == (1, 1)
    assert model.head.out_channels == 2
    # The head is the last operation and nothing follows but (for pspnet) resizing: with a zero
    # weight and bias (-3, 5) every output pixel is exactly that bias (no sigmoid, no ReLU).
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([-3.0, 5.0]))
        out = model(torch.rand(1, 2, 32, 32))
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], -3.0))
    assert torch.allclose(out[:, 1], torch.full_like(out[:, 1], 5.0))


def test_pretext_weights_load_into_segmentation_network_but_the_head():
    pretext = build_network(small_config(), output_channels=1, input_channels=NETWORK_INPUT_CHANNELS)
    segmentation = build_network(small_config(), output_channels=3, input_channels=NETWORK_INPUT_CHANNELS)
    body = {k: v for k, v in pretext.state_dict().items() if not k.startswith("head.")}
    result = segmentation.load_state_dict(body, strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"] and not result.unexpected_keys
    key = "encoder.0.conv1.weight"
    assert torch.equal(segmentation.state_dict()[key], pretext.state_dict()[key])


def test_unknown_architecture_names_the_known_ones():
    with pytest.raises(RbmnetError, match="unknown network architecture 'segformer'.*resunet.*pspnet"):
        build_network(small_config(), 1, architecture="segformer", input_channels=NETWORK_INPUT_CHANNELS)


@pytest.mark.parametrize("changes, input_channels, match", [
    ({"features_per_stage": [8]}, NETWORK_INPUT_CHANNELS, "features_per_stage"),
    ({"features_per_stage": [8, 0, 16]}, NETWORK_INPUT_CHANNELS, "features_per_stage"),
    ({}, 0, "input channels"),
    ({"dropout": 1.5}, NETWORK_INPUT_CHANNELS, "dropout"),
])
def test_bad_network_config_is_a_one_line_error(changes, input_channels, match):
    config = NetworkConfig(**{"features_per_stage": list(SMALL), **changes})
    with pytest.raises(RbmnetError, match=match):
        build_network(config, 1, input_channels=input_channels)


def test_size_not_a_multiple_of_the_downsampling_is_a_clear_error():
    model = build_network(small_config("unet"), 1, input_channels=NETWORK_INPUT_CHANNELS)
    with pytest.raises(RbmnetError, match=r"40x40 is not a multiple of 16"):
        model(torch.rand(1, 2, 40, 40))


def test_default_resunet_builds_with_its_parts():
    config = NetworkConfig()
    assert config.total_downsampling == 16
    model = build_network(config, output_channels=1, input_channels=NETWORK_INPUT_CHANNELS)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000
    assert {"encoder", "bridge", "decoder", "head"} <= {name for name, _ in model.named_children()}
    # Four encoder blocks, a bridge, four decoder blocks, each with its own concatenating residual unit.
    assert len(model.encoder) == 4 and len(model.decoder) == 4
    assert sum(isinstance(m, ConcatResidualBlock) for m in model.modules()) == 9


def test_resunet_block_concatenates_its_first_batchnorm_output():
    torch.manual_seed(0)
    model = build_network(small_config(), output_channels=1, input_channels=NETWORK_INPUT_CHANNELS).train()
    seen = {}
    blocks = {"encoder.1": model.encoder[1], "bridge": model.bridge, "decoder.3": model.decoder[3]}
    for name, block in blocks.items():
        # Clones: an in-place op after BN1 would otherwise change what the hook saw.
        block.bn1.register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__((name, "bn1"), o.detach().clone()))
        block.fuse.register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__((name, "fuse"), i[0].detach().clone()))
    model(torch.rand(2, 2, 32, 32))
    for name, block in blocks.items():
        width = block.bn1.num_features
        fuse_input, first_bn = seen[(name, "fuse")], seen[(name, "bn1")]
        assert block.fuse.in_channels == 2 * width and fuse_input.shape[1] == 2 * width
        assert torch.equal(fuse_input[:, :width], first_bn), name
        # The other half is the residual branch, not a copy of the first BN output.
        assert not torch.allclose(fuse_input[:, width:], first_bn)
    # Downsampling sits in the first conv: encoder block 1 and the bridge halve, decoder blocks do not.
    assert model.encoder[0].conv1.stride == (1, 1) and model.encoder[1].conv1.stride == (2, 2)
    assert model.bridge.conv1.stride == (2, 2) and model.decoder[3].conv1.stride == (1, 1)
