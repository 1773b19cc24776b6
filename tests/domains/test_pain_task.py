"""Pain task: losses and metrics by hand, the L-SFAN head's shape logic, LOSO beating the
majority class on MCC, real BasicMotions well above chance, ONNX parity."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from seqzoo import build_backbone
from seqzoo.datasets import get_synth
from seqzoo.datasets.pain import PainDataModule
from seqzoo.domains.pain import (
    LSFANHead,
    PainNet,
    PainTask,
    balanced_class_weights,
    classification_metrics,
    focal_loss,
)
from seqzoo.export import export_onnx

# -- losses and metrics by hand -----------------------------------------------------------


def test_focal_loss_matches_its_formula_and_reduces_to_ce():
    logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    p0 = [math.exp(2) / (math.exp(2) + 1), 1 / (1 + math.e)]
    want = sum(-((1 - p) ** 2) * math.log(p) for p in p0) / 2
    assert float(focal_loss(logits, target, gamma=2.0)) == pytest.approx(want, rel=1e-6)
    assert float(focal_loss(logits, target, gamma=0.0)) == pytest.approx(float(F.cross_entropy(logits, target)))
    weighted = focal_loss(logits, target, torch.tensor([3.0, 1.0]), gamma=2.0)
    assert float(weighted) == pytest.approx(3 * want, rel=1e-6)


def test_balanced_class_weights():
    torch.testing.assert_close(balanced_class_weights(torch.tensor([30, 10])), torch.tensor([40 / 60, 40 / 20]))
    torch.testing.assert_close(balanced_class_weights(torch.tensor([6, 0, 2])), torch.tensor([8 / 12, 0.0, 8 / 4]))


def test_accuracy_macro_f1_and_mcc_by_hand():
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    metrics = classification_metrics(3)
    values = {k: float(v) for k, v in metrics(F.one_hot(pred, 3).float(), target).items()}
    # per class F1: c0 p 2/2 r 2/3 -> 0.8; c1 p 1/2 r 1/2 -> 0.5; c2 p 1/2 r 1 -> 2/3
    assert values["acc"] == pytest.approx(4 / 6)
    assert values["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, rel=1e-6)
    # MCC = (c s - sum_k t_k p_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)): c=4, s=6, t=(3,2,1), p=(2,2,2)
    mcc = (4 * 6 - (3 * 2 + 2 * 2 + 1 * 2)) / math.sqrt((36 - 12) * (36 - 14))
    assert values["mcc"] == pytest.approx(mcc, rel=1e-6)
    binary = classification_metrics(2)
    constant = binary(F.one_hot(torch.zeros(6, dtype=torch.long), 2).float(), torch.tensor([0, 0, 0, 0, 1, 1]))
    assert float(constant["mcc"]) == 0.0, "a constant predictor has MCC 0"


# -- the L-SFAN head ------------------------------------------------------------------------


def test_lsfan_head_pools_time_and_attends_over_channels():
    head = LSFANHead(d_model=8, n_channels=5, n_classes=3, filters=8, n_heads=2).eval()
    seen = {}
    head.attention.register_forward_hook(lambda m, args, out: seen.update(tokens=args[0].shape))
    logits = head(torch.randn(4, 30, 5), torch.randn(4, 30, 8))
    assert logits.shape == (4, 3)
    assert seen["tokens"] == (4, 5, 8), "one token per sensor channel after pooling over time"


def test_paper_head_trains_the_backbone_too():
    net = PainNet(build_backbone("gru", d_model=8, n_layers=1), n_channels=5, seq_len=12, n_classes=2, head="paper",
                  filters=8, n_heads=2)
    net(torch.randn(3, 12, 5)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters())
    with pytest.raises(ValueError, match=r"expected input \(B, 12, 5\)"):
        net(torch.randn(3, 11, 5))


# -- learning -------------------------------------------------------------------------------


def _fit_and_test(dm, backbone: str, epochs: int, **task_args):
    L.seed_everything(0)
    task = PainTask(build_backbone(backbone, d_model=16, n_layers=1), **dm.dims,
                    optimizer=lambda p: torch.optim.AdamW(p, lr=0.005), **task_args)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(task, dm)
    return task, trainer.test(task, dm, verbose=False)[0]


@pytest.mark.slow
def test_loso_on_synthetic_pain_beats_the_majority_class_on_mcc(tmp_path):
    data = get_synth("pain")(out=str(tmp_path / "pain"), n_subjects=5, minutes=1.0, seed=5)
    dm = PainDataModule(str(data), n_channels=16, fold=2, batch_size=16)
    task, got = _fit_and_test(dm, "gru", epochs=4, head="paper", lsfan_filters=8, lsfan_heads=2)
    _, baseline = task.baseline(dm)
    assert baseline["test/mcc"] == 0.0
    assert got["test/mcc"] > 0.4 and got["test/f1_macro"] > baseline["test/f1_macro"] + 0.2, (got, baseline)
    assert {"test/f1_class0", "test/f1_class1"} <= set(got)
    assert float(task.class_weights[1]) > float(task.class_weights[0]), "the rarer protective class weighs more"
    report = export_onnx(task.eval().export_spec(), tmp_path / "lsfan.onnx")  # the trained L-SFAN model
    assert report.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_real_basicmotions_trains_well_above_chance(basicmotions_dir, tmp_path):
    dm = PainDataModule(str(basicmotions_dir), n_channels=6, n_classes=4, split="fixed", label_column="activity",
                        sample_rate=10,
                        window_seconds=10, stride_seconds=10, batch_size=8)
    task, got = _fit_and_test(dm, "transformer", epochs=12, head="generic", loss="ce")
    assert got["test/acc"] >= 0.7, got  # chance: 0.25 (4 balanced activities)
    assert task.baseline(dm)[1]["test/acc"] == pytest.approx(0.25)


@pytest.mark.slow
def test_onnx_parity_of_the_generic_head(tmp_path):
    task = PainTask(build_backbone("transformer", d_model=8, n_layers=1), n_channels=6, seq_len=24, n_classes=3,
                    head="generic").eval()
    report = export_onnx(task.export_spec(), tmp_path / "pain.onnx")
    assert report.max_abs_diff <= 1e-4
