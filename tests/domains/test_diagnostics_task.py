"""DiagnosticsTask: scored only at the answer positions, learns a tiny MQAR beyond the best
constant predictor and the untrained model, refuses non-causal backbones, exports with a
free batch and length (onnxruntime parity)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.datasets.diagnostics import IGNORE, MQARDataModule, SelectivBenchDataModule
from seqzoo.domains.diagnostics import DiagnosticsNet, DiagnosticsTask, answer_loss
from seqzoo.export import export_onnx
from tests.conftest import make_tiny_trainer


def _task(dm, name="gru", d_model=32, n_layers=1, lr=1e-2):
    backbone = build_backbone(name, d_model=d_model, n_layers=n_layers, causal=True)
    return DiagnosticsTask(backbone, **dm.dims, optimizer=lambda params: torch.optim.AdamW(params, lr=lr))


def test_loss_ignores_every_position_but_the_answers():
    logits = torch.randn(2, 5, 7)
    targets = torch.full((2, 5), IGNORE)
    targets[0, 3], targets[1, 4] = 2, 6
    expected = torch.nn.functional.cross_entropy(torch.stack([logits[0, 3], logits[1, 4]]), torch.tensor([2, 6]))
    torch.testing.assert_close(answer_loss(logits, targets), expected)
    changed = logits.clone()
    changed[:, :3] += 100.0  # non-answer positions do not count
    torch.testing.assert_close(answer_loss(changed, targets), expected)


def test_answers_see_only_earlier_tokens():
    torch.manual_seed(0)
    net = DiagnosticsNet(build_backbone("transformer", d_model=16, n_layers=1, causal=True), 10, 10, 12).eval()
    tokens = torch.randint(0, 10, (2, 12))
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 10
    torch.testing.assert_close(net(tokens)[:, :8], net(changed)[:, :8])


def test_non_causal_backbones_are_refused_with_the_reason():
    dm = MQARDataModule(vocab_size=16, seq_len=8, n_pairs=2)
    with pytest.raises(ConfigError, match="causal"):
        DiagnosticsTask(build_backbone("transformer", d_model=8, n_layers=1), **dm.dims)
    from seqzoo.backbones.base import get_backbone_class

    assert "causal" in DiagnosticsTask.incompatibility(get_backbone_class("informer"))
    assert DiagnosticsTask.incompatibility(get_backbone_class("mamba")) is None


def test_baseline_is_the_most_frequent_training_answer():
    dm = SelectivBenchDataModule(seq_len=24, n_train=300, n_val=20, n_test=100)
    name, metrics = _task(dm).baseline(dm)
    train, test = torch.as_tensor(dm.answers("train")), torch.as_tensor(dm.answers("test"))
    best = int(torch.bincount(train).argmax())
    assert name == "most frequent answer"
    assert metrics["test/acc"] == pytest.approx(float((test == best).double().mean()))
    assert 0.0 <= metrics["test/seq_acc"] <= metrics["test/acc"]


def test_learns_a_tiny_mqar_beyond_the_best_constant_and_the_untrained_model():
    L.seed_everything(0)
    dm = MQARDataModule(vocab_size=16, seq_len=8, n_pairs=2, n_train=1600, n_val=100, n_test=300, batch_size=32)
    task = _task(dm)
    trainer = make_tiny_trainer(max_epochs=4)
    untrained = trainer.test(task, dm, verbose=False)[0]
    trainer.fit(task, dm)
    result = trainer.test(task, dm, verbose=False)[0]
    _, baseline = task.baseline(dm)
    assert result["test/acc"] >= 0.4, result
    assert result["test/acc"] > baseline["test/acc"] + 0.2, (result, baseline)
    assert result["test/acc"] > untrained["test/acc"] + 0.2, (result, untrained)
    assert result["test/loss"] < baseline["test/loss"]


@pytest.mark.parametrize("name", ["transformer"])
def test_export_has_a_free_batch_and_length_and_matches_onnxruntime(name, tmp_path):
    pytest.importorskip("onnxruntime")
    dm = MQARDataModule(vocab_size=16, seq_len=12, n_pairs=2)
    torch.manual_seed(0)
    task = _task(dm, name, d_model=16)
    spec = task.export_spec()
    assert spec.dynamic == {"tokens": {0: "batch", 1: "length"}}
    shapes = {tuple(inputs[0].shape) for inputs in spec.check_inputs}
    assert len({s[0] for s in shapes}) == 2 and len({s[1] for s in shapes}) == 2
    report = export_onnx(spec, tmp_path / f"{name}.onnx")
    assert report.max_abs_diff <= 1e-4
