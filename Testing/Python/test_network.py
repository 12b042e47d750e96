"""Tests for CondNetLogic.network: Table II shapes, config validation, parameter counts, trainability."""
from __future__ import annotations

import pytest
import torch

from CondNetLogic.network import CondNet, CondNetConfig
from CondNetLogic.training import deep_supervision_loss

TINY = CondNetConfig(depth=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("u", "v", "depth", "size"), [(2, 1, 3, 32), (1, 2, 3, 16), (2, 2, 4, 24), (2, 1, 6, 64)])
def test_output_shapes_every_scale(u, v, depth, size):
    model = CondNet(CondNetConfig(in_channels=u, out_channels=v, depth=depth)).eval()
    x = torch.rand(2, u, size, size)
    with torch.no_grad():
        maps = model(x, deep_supervision=True)
        final = model(x)
    assert len(maps) == depth - 1
    for level, logits in enumerate(maps, start=1):
        side = size // 2 ** (level - 1)
        assert logits.shape == (2, v, side, side)
    torch.testing.assert_close(final, maps[0])


def test_non_square_and_rejected_sizes():
    model = CondNet(TINY).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 2, 32, 48)).shape == (1, 1, 32, 48)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*\\(depth-1\\) = 4"):
        model(torch.rand(1, 2, 30, 32))
    with pytest.raises(ValueError, match=r"expected input \(B, 2, H, W\)"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.rand(2, 32, 32))


def test_paper_parameter_count_is_stable():
    # Paper configuration (U=2, V=1, I=6, R=3, S=T=5): the count pins the architecture of Table II
    # as read in the module docstring; any change of layers or widths changes it.
    model = CondNet()
    assert n_params(model) == 1_113_141
    two_tables = CondNet(CondNetConfig(out_channels=2))
    encoder_params = sum(p.numel() for name, p in model.named_parameters() if name.startswith("encoder_"))
    assert n_params(two_tables) == 2 * n_params(model) - encoder_params


def test_channel_widths_follow_table_ii():
    model = CondNet()
    widths = [getattr(model.encoder_1, f"level_{i}").conv.out_channels for i in range(1, 7)]
    assert widths == [4, 8, 16, 32, 64, 128]
    assert model.encoder_1.level_1.conv.kernel_size == (3, 3)
    level = model.decoder_1.level_5
    assert level.deconv.out_channels == 64
    assert level.deconv.kernel_size == (2, 2)
    assert level.deconv.stride == (2, 2)
    assert level.conv.conv.out_channels == 128
    assert level.conv.conv.kernel_size == (5, 5)
    assert level.map.kernel_size == (5, 5)
    assert level.map.out_channels == 1
    # hub: both encoder tracks of level 6 (2 x 128 channels)
    assert level.deconv.in_channels == 256


def test_state_dict_keys_are_readable():
    keys = set(CondNet(TINY).state_dict())
    for key in ("encoder_1.level_1.conv.weight", "encoder_2.level_3.norm.running_mean",
                "decoder_1.level_2.deconv.weight", "decoder_1.level_1.map.bias", "decoder_1.level_1.conv.conv.weight"):
        assert key in keys


def test_config_round_trip_and_validation():
    config = CondNetConfig(in_channels=1, out_channels=2, depth=4, encoder_kernel=(3, 3, 5, 5), norm="instance")
    assert CondNetConfig.from_dict(config.to_dict()) == config
    assert config.encoder_features == (4, 8, 16, 32)
    assert config.decoder_features == (8, 16, 32)
    with pytest.raises(ValueError, match="depth must be >= 2"):
        CondNetConfig(depth=1)
    with pytest.raises(ValueError, match="odd positive"):
        CondNetConfig(decoder_kernel=4)
    with pytest.raises(ValueError, match="needs 6 values"):
        CondNetConfig(encoder_kernel=(3, 3))
    with pytest.raises(ValueError, match="norm must be one of"):
        CondNetConfig(norm="group")
    with pytest.raises(TypeError, match="in_channels must be an int"):
        CondNetConfig(in_channels=2.0)
    with pytest.raises(ValueError, match="unknown CondNetConfig keys"):
        CondNetConfig.from_dict({"depth": 3, "width": 2})
    with pytest.raises(TypeError, match="config must be a CondNetConfig"):
        CondNet({"depth": 3})
    with pytest.raises(ValueError, match="instance normalisation needs at least 2\\*\\*depth = 16"):
        CondNet(config)(torch.zeros(1, 1, 8, 8))


def test_tiny_network_trains_on_one_batch():
    torch.manual_seed(0)
    model = CondNet(TINY)
    x = torch.rand(4, 2, 32, 32)
    y = (x[:, :1] * 0.6 + 0.2 * x[:, 1:]).clamp(0, 0.9)  # a smooth function of the inputs, in [0, 1 - tau]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss = deep_supervision_loss(model(x, deep_supervision=True), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02
