"""SeparationTask: SI-SNR and PIT behave as defined, padding is invisible, it learns, it exports."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from seqzoo import build_backbone
from seqzoo.domains.separation import SeparationNet, SeparationTask, pit_si_snr, separation_scores
from seqzoo.export import export_onnx
from tests.conftest import make_tiny_trainer


def _si_snr_by_hand(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """10 log10(||s_t||^2 / ||e||^2), s_t = <s_hat, s> s / ||s||^2, both zero-mean."""
    est, ref = estimate - estimate.mean(), target - target.mean()
    projection = (est @ ref) / (ref @ ref) * ref
    noise = est - projection
    return 10 * math.log10(float(projection @ projection) / float(noise @ noise))


def test_si_snr_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    sources = torch.randn(1, 2, 400, generator=g, dtype=torch.float64)
    estimate = 0.5 * sources + 0.2 * torch.randn(1, 2, 400, generator=g, dtype=torch.float64) + 3.0
    value, perm = pit_si_snr(estimate, sources)
    by_hand = sum(_si_snr_by_hand(estimate[0, k], sources[0, k]) for k in range(2)) / 2
    assert perm.tolist() == [[0, 1]]
    assert float(value) == pytest.approx(by_hand, abs=1e-6)
    # scale invariance: the estimate's gain does not matter
    assert float(pit_si_snr(7.0 * estimate, sources)[0]) == pytest.approx(by_hand, abs=1e-6)


def test_pit_is_invariant_to_source_order():
    g = torch.Generator().manual_seed(1)
    sources = torch.randn(3, 2, 300, generator=g)
    estimate = sources + 0.3 * torch.randn(3, 2, 300, generator=g)
    swapped = sources.flip(1)
    value, perm = pit_si_snr(estimate, sources)
    value_swapped, perm_swapped = pit_si_snr(estimate, swapped)
    torch.testing.assert_close(value, value_swapped)
    assert perm.tolist() == [[0, 1]] * 3 and perm_swapped.tolist() == [[1, 0]] * 3
    # the loss and its gradient do not depend on the order either
    est = estimate.clone().requires_grad_()
    (-pit_si_snr(est, sources)[0].mean()).backward()
    grad = est.grad.clone()
    est.grad = None
    (-pit_si_snr(est, swapped)[0].mean()).backward()
    torch.testing.assert_close(est.grad, grad)


def test_mixture_as_estimate_has_zero_improvement():
    g = torch.Generator().manual_seed(2)
    sources = torch.randn(2, 2, 1200, generator=g)
    mix = sources.sum(1)
    scores = separation_scores(mix[:, None].expand_as(sources), sources, mix, sdr_filter_length=128)
    torch.testing.assert_close(scores["si_snri"], torch.zeros(2))
    torch.testing.assert_close(scores["sdri"], torch.zeros(2), atol=1e-4, rtol=0)
    # near-perfect separation: a large improvement
    close = sources + 1e-3 * torch.randn(2, 2, 1200, generator=g)
    scores = separation_scores(close, sources, mix, sdr_filter_length=128)
    assert bool((scores["si_snri"] > 40).all()) and bool((scores["sdri"] > 40).all())


@pytest.mark.parametrize("name", ["transformer", "gru", "fsmn"])
def test_padded_batch_equals_each_utterance_alone(name):
    torch.manual_seed(0)
    net = SeparationNet(build_backbone(name, d_model=16, n_layers=1), n_sources=2, n_filters=8).eval()
    a, b = torch.randn(1, 803), torch.randn(1, 517)
    batch = torch.zeros(2, 803)
    batch[0], batch[1, :517] = a[0], b[0]
    with torch.no_grad():
        out = net(batch, torch.tensor([803, 517]))
        torch.testing.assert_close(out[0], net(a)[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out[1, :, :517], net(b)[0], atol=1e-5, rtol=1e-4)
    assert out.shape == (2, 2, 803)


def test_short_input_is_a_clear_error():
    net = SeparationNet(build_backbone("gru", d_model=8, n_layers=1), n_filters=4)
    with pytest.raises(ValueError, match="at least 9 samples, got 5"):
        net(torch.randn(1, 5))


@pytest.mark.slow
def test_export_with_a_symbolic_audio_length(tmp_path):
    task = SeparationTask(build_backbone("transformer", d_model=16, n_layers=1), n_filters=16)
    report = export_onnx(task.export_spec(), tmp_path / "sep.onnx")
    assert report.max_abs_diff <= 1e-4
    assert {shape[0][1] for shape in report.checked_shapes} == {1600, 2403, 805}
    import onnx

    dims = onnx.load(str(tmp_path / "sep.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_param, "batch and samples stay symbolic"


@pytest.fixture(scope="module")
def synthetic_mixtures(tmp_path_factory):
    pytest.importorskip("soundfile")
    from seqzoo.datasets.separation import synth_separation

    return synth_separation(str(tmp_path_factory.mktemp("sep")), n_train=128, n_val=4, n_test=8, seconds=1.0)


@pytest.mark.slow
def test_learns_a_positive_si_snr_improvement(synthetic_mixtures):
    from seqzoo.datasets.separation import SeparationDataModule

    L.seed_everything(0)
    dm = SeparationDataModule(str(synthetic_mixtures), segment=0.25, batch_size=8, eval_batch_size=4)
    task = SeparationTask(build_backbone("fsmn", d_model=32, n_layers=1), n_filters=64,
                          optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3))
    name, baseline = task.baseline(dm)
    assert name == "mixture as estimate" and baseline["test/si_snri"] == pytest.approx(0.0, abs=1e-5)
    trainer = make_tiny_trainer(max_epochs=8, limit_val_batches=0)
    trainer.fit(task, dm)
    result = trainer.test(task, dm, verbose=False)[0]
    assert result["test/si_snri"] > 1.0, result
    assert result["test/sdri"] > 0.0, result


def test_stage_metrics_are_epoch_means_of_the_per_utterance_scores():
    """The one metric idiom: val/test collections cloned from make_metrics(); validation skips SDR."""
    task = SeparationTask(build_backbone("gru", d_model=16, n_layers=1), n_filters=16)
    g = torch.Generator().manual_seed(1)
    sources = torch.randn(3, 2, 800, generator=g)
    mix = sources.sum(1)
    estimate = sources + 0.3 * torch.randn(3, 2, 800, generator=g)
    lengths = torch.tensor([800, 640, 500])
    expected = separation_scores(estimate, sources, mix, lengths)
    for batch in ((slice(0, 2)), (slice(2, 3))):  # two batches: an epoch mean over utterances
        task.test_metrics.update(estimate[batch], sources[batch], mix[batch], lengths[batch])
        task.val_metrics.update(estimate[batch], sources[batch], mix[batch], lengths[batch])
    test, val = task.test_metrics.compute(), task.val_metrics.compute()
    assert set(test) == {"test/si_snr", "test/si_snri", "test/sdr", "test/sdri"}
    assert set(val) == {"val/si_snr", "val/si_snri"}
    for key, values in expected.items():
        assert float(test[f"test/{key}"]) == pytest.approx(float(values.mean()), abs=1e-4)
