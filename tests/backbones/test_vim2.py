"""ViM2: the four scan orders, 2-D geometry (transposing the image swaps the row and column
scans), every patch reaching every output, the vision task's checks, and that it learns."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.backbones.vim2 import CrossScan2D, scan_orders
from seqzoo.datasets.vision import VisionDataModule, synth_vision
from seqzoo.domains.vision import VisionNet, VisionTask
from tests.conftest import make_tiny_trainer


def test_scan_orders_of_a_2x3_grid():
    rows, rows_rev, cols, cols_rev = (o.tolist() for o in scan_orders(2, 3))
    assert rows == [0, 1, 2, 3, 4, 5] and rows_rev == [5, 4, 3, 2, 1, 0]
    assert cols == [0, 3, 1, 4, 2, 5] and cols_rev == [5, 2, 4, 1, 3, 0]


def _transpose_tokens(x, height, width):
    return x.unflatten(1, (height, width)).transpose(1, 2).flatten(1, 2)


def test_transposing_the_image_swaps_the_row_and_column_scans():
    """A 2 x 3 mixer and a 3 x 2 mixer with the row/column scans swapped and the 3x3 conv
    transposed give transposed outputs: the scans follow the grid's geometry."""
    torch.manual_seed(0)
    a = CrossScan2D(8, 2, 3, d_state=4).double()
    b = CrossScan2D(8, 3, 2, d_state=4).double()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.conv2d.weight.copy_(a.conv2d.weight.transpose(-1, -2))
        for i, j in [(0, 2), (1, 3), (2, 0), (3, 1)]:
            b.scans[i].load_state_dict(a.scans[j].state_dict())
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(b(_transpose_tokens(x, 2, 3)), _transpose_tokens(a(x), 2, 3), atol=1e-12, rtol=1e-10)


def test_every_patch_reaches_every_output_and_the_channel_mixer_mixes_tokens():
    torch.manual_seed(0)
    model = build_backbone("vim2", d_model=8, n_layers=1, n_tokens=6, grid_width=3).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64)  # (a plain sum over features is 0 after the final LayerNorm)
    jac = torch.autograd.functional.jacobian(lambda t: model(t) @ w, x)[0, :, 0].abs().sum(-1)  # (out, in)
    assert bool((jac > 0).all()), jac
    # the channel sublayer alone moves information between tokens (its features are the tokens)
    channel = model.layers.channel[0]
    xc = torch.randn(1, 6, 8, dtype=torch.float64, requires_grad=True)
    grad = torch.autograd.grad(channel(xc)[0, 0].sum(), xc)[0][0]
    assert grad[1:].abs().sum() > 0


def test_grid_must_match_and_cls_pooling_is_refused():
    with pytest.raises(ConfigError, match="square grid"):
        build_backbone("vim2", d_model=8, n_layers=1, n_tokens=6)
    with pytest.raises(ConfigError, match="n_tokens"):
        build_backbone("vim2", d_model=8, n_layers=1)
    backbone = build_backbone("vim2", d_model=8, n_layers=1, n_tokens=16)
    with pytest.raises(ConfigError, match="pool"):
        VisionNet(backbone, n_classes=3, image_size=8, in_chans=1, patch_size=2, pool="cls")
    with pytest.raises(ConfigError, match="built for 16 patches"):
        VisionNet(backbone, n_classes=3, image_size=8, in_chans=1, patch_size=4, pool="mean")
    net = VisionNet(backbone, n_classes=3, image_size=8, in_chans=1, patch_size=2, pool="mean")
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.slow
def test_learns_bars_well_beyond_the_majority_class(tmp_path):
    L.seed_everything(0)
    path = synth_vision(out=str(tmp_path / "bars"), n_train=320, n_test=80, image_size=8, noise=0.1)
    dm = VisionDataModule(str(path), n_classes=4, image_size=8, batch_size=32)
    backbone = build_backbone("vim2", d_model=16, n_layers=1, n_tokens=16, d_state=4)
    task = VisionTask(backbone, **dm.dims, patch_size=2, pool="mean",
                      optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3))
    trainer = make_tiny_trainer(max_epochs=8)
    trainer.fit(task, dm)
    result = trainer.test(task, dm, verbose=False)[0]
    _, baseline = task.baseline(dm)
    assert result["test/acc"] >= 0.8 and result["test/acc"] > baseline["test/acc"] + 0.4, (result, baseline)


def test_the_vision_task_gives_compare_the_patch_grid_and_the_papers_pooling():
    from seqzoo.backbones.vim2 import ViM2
    from seqzoo.backbones.mambamixer import MambaMixer

    dims = {"n_classes": 10, "image_size": 8, "in_chans": 1}
    assert VisionTask.fixed_token_keywords(ViM2, {"patch_size": 2, "pool": "cls"}, dims) == {"n_tokens": 16, "grid_width": 4}
    assert VisionTask.fixed_token_keywords(MambaMixer, {"patch_size": 2, "pool": "cls"}, dims) == {"n_tokens": 17}
    assert VisionTask.paper_forms["vim2"] == {"pool": "mean"}
    backbone = build_backbone("vim2", d_model=8, n_layers=1,
                              **VisionTask.fixed_token_keywords(ViM2, {"patch_size": 2}, dims))
    task = VisionTask(backbone, **dims, patch_size=2, **VisionTask.paper_forms["vim2"])
    assert task(dict(image=torch.randn(2, 1, 8, 8))).shape == (2, 10)


def test_the_four_directions_scanned_as_one_equal_four_scans():
    import torch.nn.functional as F

    torch.manual_seed(0)
    mixer = CrossScan2D(8, 2, 3, d_state=4).double()
    with torch.no_grad():  # directions that differ
        for k, scan in enumerate(mixer.scans):
            scan.A_log.add_(0.1 * k)
            scan.D.add_(0.2 * k)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    u, z = mixer.in_proj(x).chunk(2, dim=-1)
    u = F.silu(mixer.conv2d(u.transpose(1, 2).reshape(2, -1, 2, 3))).flatten(2).transpose(1, 2)
    y = sum(scan(u[:, order], None)[:, torch.argsort(order)] for scan, order in zip(mixer.scans, scan_orders(2, 3)))
    torch.testing.assert_close(mixer(x), mixer.out_proj(mixer.out_norm(y) * F.silu(z)), rtol=0, atol=1e-12)
