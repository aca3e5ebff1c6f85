"""train_sr's LPIPS term: pyiqa's public metric as a loss, the same numbers as pyiqa's LPIPS network
called on [-1, 1] images, gradients to the images only (offline: random VGG and LPIPS weights)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def random_lpips_weights(tmp_path_factory):
    """A random LPIPS(VGG) state dict on disk, and torchvision's VGG-16 built without its download."""
    from types import SimpleNamespace

    from pyiqa.archs import lpips_arch
    from torchvision.models.vgg import cfgs, make_layers

    mp = pytest.MonkeyPatch()
    # LPIPS uses VGG-16's convolutional trunk only: build that, randomly initialised (no download)
    mp.setattr(
        lpips_arch.models,
        "vgg16",
        lambda weights=None, **kw: SimpleNamespace(features=make_layers(cfgs["D"])),
    )
    torch.manual_seed(0)
    net = lpips_arch.LPIPS(net="vgg", version="0.1", pretrained=False)
    for p in net.parameters():  # the linear layers start at ones: make them differ per channel
        p.data.uniform_(0.0, 0.1) if p.dim() == 4 and p.shape[-1] == 1 else None
    path = tmp_path_factory.mktemp("lpips") / "lpips_vgg_random.pth"
    torch.save(net.state_dict(), path)
    yield str(path)
    mp.undo()


def test_lpips_loss_is_pyiqa_lpips_on_minus_one_one(random_lpips_weights):
    from pyiqa.archs.lpips_arch import LPIPS

    from coz.train_sr.losses import LPIPSLoss

    reference = LPIPS(net="vgg", version="0.1", pretrained_model_path=random_lpips_weights).eval()
    loss = LPIPSLoss(random_lpips_weights)
    g = torch.Generator().manual_seed(1)
    sr = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1).requires_grad_(True)
    hr = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        expected = reference(sr.detach(), hr, normalize=False).mean()
    value = loss(sr, hr)
    assert value.shape == ()
    assert float(expected) > 0
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    assert float(loss(hr, hr)) == pytest.approx(0.0, abs=1e-6)  # lower is better: 0 for the same image

    value.backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0  # the generator learns from it
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())  # the net does not
    loss.train()
    assert not loss.training and not any(m.training for m in loss.modules())  # always frozen
