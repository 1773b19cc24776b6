"""IcdCodingTask: LDAM margins, CAML/sklearn metric definitions, code-wise attention masking,
learning above the training prior and TF-IDF + logistic regression on tiny synthetic notes,
explanations, and ONNX export with a free batch and note length."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqzoo.backbones.base import build_backbone
from seqzoo.domains.icd import CodeWiseAttention, IcdCodingTask, icd_metrics, ldam_bce, ldam_margins
from seqzoo.errors import ConfigError
from tests.conftest import make_tiny_trainer


def _task(backbone="transformer", n_classes=5, vocab=50, seq_len=64, d=16, **kw):
    torch.manual_seed(0)
    return IcdCodingTask(build_backbone(backbone, d_model=d, n_layers=1), vocab, n_classes, seq_len, **kw)


# -- LDAM ------------------------------------------------------------------------------------
def test_ldam_margins_follow_c_over_fourth_root_of_counts():
    margins = ldam_margins([1, 16, 81, 0, 10000], C=3.0)
    torch.testing.assert_close(margins, torch.tensor([3.0, 1.5, 1.0, 3.0, 0.3]))


def test_ldam_bce_subtracts_the_margin_from_positive_logits_only():
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    margins = torch.tensor([0.25, 0.5, 1.0])
    expected = F.binary_cross_entropy_with_logits(torch.tensor([[0.25, -1.0, 1.0]]), targets)
    torch.testing.assert_close(ldam_bce(logits, targets, margins), expected)
    # by hand: mean of softplus(-z) for positives and softplus(z) for negatives
    by_hand = (F.softplus(torch.tensor(-0.25)) + F.softplus(torch.tensor(-1.0)) + F.softplus(torch.tensor(-1.0))) / 3
    torch.testing.assert_close(ldam_bce(logits, targets, margins), by_hand)


def test_margin_applies_in_training_only():
    task = _task()
    task.set_label_counts([1, 16, 81, 256, 0])
    batch = {"tokens": torch.randint(2, 50, (3, 10)), "mask": torch.ones(3, 10, dtype=torch.bool),
             "targets": torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 1, 1, 1]])}
    task.eval()
    logits = task(batch)
    train_loss = task.training_loss(logits, batch["targets"])
    plain = F.binary_cross_entropy_with_logits(logits, batch["targets"])
    assert train_loss > plain  # positives pushed down by the margin
    torch.testing.assert_close(train_loss, F.binary_cross_entropy_with_logits(
        logits - task.ldam_margin * batch["targets"], batch["targets"]))
    bce = _task(loss="bce")
    torch.testing.assert_close(bce.training_loss(logits, batch["targets"]), plain)


def test_ldam_without_counts_is_a_clear_error():
    with pytest.raises(ConfigError, match="label counts"):
        _task().training_loss(torch.zeros(1, 5), torch.zeros(1, 5))
    with pytest.raises(ConfigError, match="shape \\(5,\\)"):
        _task().set_label_counts([1, 2, 3])


# -- metrics ---------------------------------------------------------------------------------
def test_metrics_match_caml_and_sklearn_definitions():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 6)) < 0.3).astype(np.float32)
    targets[:, 5] = 0  # a code absent from the split: skipped by macro-AUC, 0 in the F1s
    probs = np.clip(targets * 0.4 + rng.random((40, 6)) * 0.6, 0, 1).astype(np.float32)
    got = icd_metrics(torch.from_numpy(probs), torch.from_numpy(targets), precision_at=(3,))
    pred = probs >= 0.5
    assert got["micro_auc"] == pytest.approx(sk.roc_auc_score(targets.ravel(), probs.ravel()), abs=1e-5)
    assert got["macro_auc"] == pytest.approx(np.mean([sk.roc_auc_score(targets[:, k], probs[:, k]) for k in range(5)]),
                                             abs=1e-5)
    assert got["micro_f1"] == pytest.approx(sk.f1_score(targets, pred, average="micro"), abs=1e-5)
    assert got["macro_f1_labelwise"] == pytest.approx(sk.f1_score(targets, pred, average="macro", zero_division=0),
                                                      abs=1e-5)
    # CAML: harmonic mean of macro precision and macro recall (1e-10 denominators -> 0 for empty codes)
    tp = (pred & (targets > 0)).sum(0)
    macro_p = np.mean(tp / (pred.sum(0) + 1e-10))
    macro_r = np.mean(tp / (targets.sum(0) + 1e-10))
    assert got["macro_f1"] == pytest.approx(2 * macro_p * macro_r / (macro_p + macro_r), abs=1e-5)
    assert got["macro_f1"] != pytest.approx(got["macro_f1_labelwise"], abs=1e-4)
    top3 = np.argsort(-probs, axis=1)[:, :3]
    assert got["p_at_3"] == pytest.approx(np.mean(np.take_along_axis(targets, top3, 1).sum(1) / 3), abs=1e-5)


# -- network ---------------------------------------------------------------------------------
def test_code_wise_attention_ignores_padding():
    torch.manual_seed(0)
    attn = CodeWiseAttention(8, 3)
    h = torch.randn(2, 7, 8)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    v, alpha = attn(h, mask)
    assert alpha.shape == (2, 3, 7)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 3))
    assert float(alpha[1, :, 4:].detach().abs().max()) == 0.0
    v_short, _ = attn(h[1:, :4], mask[1:, :4])
    torch.testing.assert_close(v[1:], v_short)
    # by the formula: softmax_t(w2_k . tanh(W1 h_t + b1) + b2_k)
    scores = torch.tanh(h[0] @ attn.hidden.weight.T + attn.hidden.bias) @ attn.codes.weight.T + attn.codes.bias
    torch.testing.assert_close(alpha[0], torch.softmax(scores, dim=0).T)


@pytest.mark.parametrize("backbone", ["transformer", "s4d"])
def test_padding_does_not_change_a_note_s_scores(backbone):
    task = _task(backbone).eval()
    tokens = torch.randint(2, 50, (1, 12))
    alone = task({"tokens": tokens, "mask": torch.ones(1, 12, dtype=torch.bool)})
    padded = torch.cat([tokens, torch.zeros(1, 5, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 12, dtype=torch.bool), torch.zeros(1, 5, dtype=torch.bool)], 1)
    torch.testing.assert_close(task({"tokens": padded, "mask": mask}), alone, atol=1e-5, rtol=1e-5)


# -- learning, explanation, export on tiny synthetic notes -----------------------------------
@pytest.fixture(scope="module")
def tiny_notes(tmp_path_factory):
    pytest.importorskip("simple_icd_10_cm")
    from seqzoo.datasets.icd import IcdDataModule

    dm = IcdDataModule(str(tmp_path_factory.mktemp("icd") / "notes"), version="6", n_classes=6, vocab_size=400,
                       min_df=1, max_len=120, batch_size=8, prepare="synth:icd",
                       synth_options=dict(n_train=240, n_val=20, n_test=80, n_codes=6, min_len=80, max_len=120,
                                          zipf_a=0.5, seed=1))
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def trained(tiny_notes):
    torch.manual_seed(0)
    task = IcdCodingTask(build_backbone("transformer", d_model=64, n_layers=1), 400, 6, 120,
                         optimizer=lambda params: torch.optim.AdamW(params, lr=3e-3))
    trainer = make_tiny_trainer(max_epochs=15, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(task, tiny_notes)
    result = trainer.test(task, tiny_notes, verbose=False)[0]
    return task, result


def test_learns_above_the_prior_and_tfidf(trained, tiny_notes):
    task, result = trained
    baselines = dict(task.baseline(tiny_notes))
    assert set(baselines) == {"training prior", "TF-IDF + logistic regression"}
    for name, metrics in baselines.items():
        for key in ("test/micro_f1", "test/macro_auc"):
            assert result[key] > metrics[key], (name, key, result[key], metrics[key])
    assert result["test/micro_f1"] > 0.6


def test_explanations_point_at_the_codes_key_words(trained, tiny_notes):
    import pandas as pd

    task, _ = trained
    keys = dict(pd.read_csv(f"{tiny_notes.path}/codes.csv", dtype=str)[["code", "key_word"]].values)
    batch = next(iter(tiny_notes.test_dataloader()))
    task.eval()
    probs, evidence = task.explain(batch["tokens"], batch["mask"], top=5)
    hits = total = 0
    for b, note in enumerate(evidence):
        for k, items in note.items():
            words = [tiny_notes.vocab.itos[t] for _, t, _ in items]
            hits += keys[tiny_notes.labels[k]] in words
            total += 1
            assert all(batch["mask"][b, p] for p, _, _ in items)
    assert total > 0 and hits / total > 0.5, (hits, total)


def test_export_parity_with_free_batch_and_length(tmp_path):
    pytest.importorskip("onnxruntime")
    from seqzoo.export import export_onnx

    task = _task("transformer", seq_len=64)
    report = export_onnx(task.export_spec(), tmp_path / "icd.onnx")
    assert report.max_abs_diff < 1e-4
    assert report.dynamic["tokens"] == {0: "batch", 1: "length"}
    import onnx

    graph = onnx.load(str(tmp_path / "icd.onnx")).graph
    for value in graph.input:  # the free axes carry their labels in the graph, not the exporter's s77
        assert [d.dim_param for d in value.type.tensor_type.shape.dim] == ["batch", "length"], value.name
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {s[0] for s in report.checked_shapes} >= {(2, 24), (3, 33)}
