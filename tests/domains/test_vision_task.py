"""VisionTask: the class token goes last (so causal backbones read every patch), the model
learns the synthetic bars beyond the majority baseline, and it exports with a free batch."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.cli import main
from seqzoo.datasets.vision import VisionDataModule, synth_vision
from seqzoo.domains.vision import VisionNet, VisionTask
from seqzoo.export import export_onnx


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    return synth_vision(out=str(tmp_path_factory.mktemp("bars")), n_train=320, n_test=80, image_size=8, noise=0.1)


def test_class_token_is_appended_last_and_a_causal_backbone_reads_every_patch():
    torch.manual_seed(0)
    net = VisionNet(build_backbone("gru", d_model=8, n_layers=1, causal=True), n_classes=3, image_size=4,
                    in_chans=1, patch_size=2, positions="none").eval()
    seen = {}
    net.backbone.register_forward_hook(lambda m, args, out: seen.update(tokens=args[0]))
    images = torch.randn(2, 1, 4, 4)
    logits = net(images)
    assert seen["tokens"].shape == (2, 5, 8), "4 patches + 1 class token"
    torch.testing.assert_close(seen["tokens"][:, -1], net.cls_token[0].expand(2, -1))
    changed = images.clone()
    changed[:, :, :2, :2] += 1.0  # the first patch in raster order
    assert not torch.allclose(net(changed), logits), "the head sees the first patch through a causal backbone"


def test_mean_pool_has_no_class_token_and_bad_shapes_are_clear():
    net = VisionNet(build_backbone("transformer", d_model=8, n_layers=1), n_classes=3, image_size=4, in_chans=3,
                    patch_size=2, pool="mean")
    assert net.n_tokens == 4 and not hasattr(net, "cls_token")
    assert net(torch.randn(2, 3, 4, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected images \(B, 3, 4, 4\), got \(2, 1, 4, 4\)"):
        net(torch.randn(2, 1, 4, 4))
    with pytest.raises(ConfigError, match=r"patch_size \(3\) must divide image_size \(4\)"):
        VisionNet(build_backbone("gru", d_model=8, n_layers=1), n_classes=3, image_size=4, in_chans=3, patch_size=3)


def _task(dm, name="vir", n_layers=2, **kw):
    backbone = build_backbone(name, d_model=32, n_layers=n_layers, causal=True)
    return VisionTask(backbone, **dm.dims, patch_size=2,
                      optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3), **kw)


def test_majority_baseline(bars):
    dm = VisionDataModule(str(bars), n_classes=4, image_size=8, batch_size=32)
    name, metrics = _task(dm).baseline(dm)
    labels = dm.splits["test"].labels  # read by the baseline's setup
    counts = torch.bincount(torch.as_tensor(dm.splits["train"].labels))
    assert name == "majority class"
    assert metrics["test/acc"] == pytest.approx(float((labels == int(counts.argmax())).mean()))
    assert metrics["test/loss"] == pytest.approx(-float(torch.log(counts / counts.sum())[labels].mean()), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vir", "aaren"])
def test_learns_bars_well_beyond_the_majority_class(bars, name):
    L.seed_everything(0)
    dm = VisionDataModule(str(bars), n_classes=4, image_size=8, batch_size=32)
    task = _task(dm, name)
    trainer = L.Trainer(max_epochs=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(task, dm)
    result = trainer.test(task, dm, verbose=False)[0]
    _, baseline = task.baseline(dm)
    assert result["test/acc"] >= 0.8 and result["test/acc"] > baseline["test/acc"] + 0.4, (result, baseline)
    assert result["test/images_per_s"] > 0


@pytest.mark.slow
def test_export_parity_with_a_free_batch(bars, tmp_path):
    dm = VisionDataModule(str(bars), n_classes=4, image_size=8)
    report = export_onnx(_task(dm, "vir", n_layers=1).export_spec(), tmp_path / "vision.onnx")
    assert report.max_abs_diff <= 1e-4
    assert [s[0][0] for s in report.checked_shapes] == [2, 5]


@pytest.mark.slow
def test_digits_config_runs_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "configs" / "vision" / "digits.yaml")
    assert main(["fit", "--config", config, "--model.backbone", "aaren", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2"]) == 0
    assert (tmp_path / "data" / "digits" / "train" / "9").is_dir(), "the real digits were prepared on first use"
    assert (tmp_path / "runs" / "digits" / "aaren" / "seed0" / "checkpoints" / "last.ckpt").exists()
