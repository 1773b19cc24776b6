"""ICD coding of discharge summaries with code-wise attention (TransICD, Biswas et al. 2021).

Pipeline (paper Sec. 3, authors' code ``biplob1ly/TransICD``), tokens (B, S) -> logits (B, K):

1. word embedding ``E[x] * sqrt(D)`` plus sinusoidal positions, dropout (``PAD`` = 0 is zero);
2. any time-token backbone ``H = backbone(X, mask)`` (B, S, D) -- the paper's is a 2-layer,
   8-head Transformer encoder;
3. code-wise attention: for each code k,
   ``alpha_k = softmax_t(w2_k . tanh(W1 h_t + b1) + b2_k)`` over the valid positions t
   (padding gets -inf before the softmax), ``v_k = sum_t alpha_kt h_t``; W1 is (e*D, D) with
   expansion e = 2 as in the authors' code;
4. one linear scorer per code: ``z_k = u_k . v_k + c_k`` (the paper's K separate
   ``Linear(D, 1)``, stored as one (K, D) weight).

Loss: LDAM-BCE -- during training the margin ``Delta_k = C * n_k^(-1/4)`` (C = 3, ``n_k`` the
training notes with code k, ``n_k = 0`` treated as 1 as in the authors' code) is subtracted
from the logits of the positive labels, ``BCEWithLogits(z - Delta * y, y)``; validation, test
and prediction use the raw logits. ``loss="bce"`` is plain BCE. The counts reach the task
through the data hook ``datamodule.train_label_counts()`` in ``setup`` (or
``set_label_counts``).

Metrics (CAML's definitions, which TransICD reports; probabilities ``sigmoid(z)``):
``micro_auc`` over all (note, code) pairs; ``macro_auc`` the mean per-code AUC over codes that
have both classes in the split; ``micro_f1`` at threshold 0.5; ``macro_f1`` **CAML's**: the
harmonic mean of macro-precision and macro-recall (a code with no predicted / no true
positives contributes 0 to that average); ``macro_f1_labelwise`` **scikit-learn's**
``f1_score(average="macro", zero_division=0)``: the mean of per-code F1 (torchmetrics'
``MultilabelF1Score(average="macro")``); ``p_at_k``: mean over notes of (true codes among the
k highest scores) / k.

Baselines (``baseline``): the training prior (every note scored with each code's training
frequency) and TF-IDF + one logistic regression per code (scikit-learn).

Explanation: ``explain(tokens, mask)`` (and ``seqzoo predict``) gives, per predicted code,
the positions, token ids / words and weights of the largest attention weights ``alpha_k``.
Export: token ids (B, S) int64 and mask (B, S) bool in, code probabilities (B, K) out; batch
and note length free (up to ``seq_len``, the position table's size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import CatMetric
from torchmetrics.functional.classification import (
    binary_auroc,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.errors import ConfigError
from seqzoo.export import ExportSpec, sequence_inputs
from seqzoo.layers import PositionalEmbedding, Positions

LossKind = Literal["ldam", "bce"]


class CodeWiseAttention(nn.Module):
    """Per-code attention over positions: (B, S, D), mask (B, S) -> v (B, K, D), alpha (B, K, S).

    Args:
        d_model: width D of the backbone's output.
        n_classes: number of codes K.
        expansion: hidden width of the scoring MLP is ``expansion * d_model``.
    """

    def __init__(self, d_model: int, n_classes: int, expansion: int = 2) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_model, expansion * d_model)  # W1, b1
        self.codes = nn.Linear(expansion * d_model, n_classes)  # rows w2_k, b2_k

    def forward(self, h: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores = self.codes(torch.tanh(self.hidden(h)))  # (B, S, K)
        if mask is not None:
            scores = scores.masked_fill(~mask[..., None], float("-inf"))
        alpha = torch.softmax(scores, dim=1).transpose(1, 2)  # (B, K, S)
        return alpha @ h, alpha


class PerCodeScorer(nn.Module):
    """K independent ``Linear(D, 1)`` scorers: v (B, K, D) -> logits (B, K).

    Args:
        d_model: width D.
        n_classes: number of codes K.
    """

    def __init__(self, d_model: int, n_classes: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_model)  # nn.Linear's default initialisation, per scorer
        self.weight = nn.Parameter(torch.empty(n_classes, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_classes).uniform_(-bound, bound))

    def forward(self, v: Tensor) -> Tensor:
        return (v * self.weight).sum(dim=-1) + self.bias


class IcdNet(nn.Module):
    """Embedding -> backbone -> code-wise attention -> per-code scorers on plain tensors.

    Args:
        backbone: the sequence mixer (time tokens).
        vocab_size: embedding rows (PAD = 0, UNK = 1, words).
        n_classes: number of codes K.
        seq_len: longest note (size of the position table).
        positions: "sinusoidal" (paper), "learned" or "none".
        attn_expansion: hidden width factor of the code-wise attention (paper code: 2).
        embed_dropout: dropout on embeddings + positions (paper: 0.1).
        scale_embedding: multiply embeddings by sqrt(D) before adding positions (paper code: yes).
    """

    def __init__(self, backbone: Backbone, vocab_size: int, n_classes: int, seq_len: int,
                 positions: Positions = "sinusoidal", attn_expansion: int = 2, embed_dropout: float = 0.1,
                 scale_embedding: bool = True) -> None:
        super().__init__()
        d = backbone.d_model
        self.embed = nn.Embedding(vocab_size, d, padding_idx=0)
        # N(0, 1/D) so that E[x] * sqrt(D) has unit-variance components (the paper's embeddings are
        # pretrained word2vec vectors of small norm; N(0, 1) times sqrt(D) would swamp the positions)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        self.positions = PositionalEmbedding(positions, seq_len, d)
        self.dropout = nn.Dropout(embed_dropout)
        self.backbone = backbone
        self.attention = CodeWiseAttention(d, n_classes, attn_expansion)
        self.scorer = PerCodeScorer(d, n_classes)
        self.scale = math.sqrt(d) if scale_embedding else 1.0
        self.seq_len = seq_len

    def forward_with_attention(self, tokens: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits (B, K) and attention weights (B, K, S)."""
        if tokens.dim() != 2:
            raise ValueError(f"expected token ids (B, S), got shape {tuple(tokens.shape)}")
        x = self.dropout(self.positions(self.embed(tokens) * self.scale))
        h = self.backbone(x, mask)
        v, alpha = self.attention(h, mask)
        return self.scorer(v), alpha

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_with_attention(tokens, mask)[0]


class IcdProbabilities(nn.Module):
    """Export wrapper: token ids (B, S), mask (B, S) -> code probabilities (B, K)."""

    def __init__(self, net: IcdNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        return torch.sigmoid(self.net(tokens, mask))


def ldam_margins(label_counts: Sequence[int] | Tensor, C: float = 3.0) -> Tensor:
    """``Delta_k = C * n_k^(-1/4)``, with ``n_k = 0`` counted as 1 (authors' code)."""
    n = torch.as_tensor(label_counts, dtype=torch.float32).clamp_min(1.0)
    return C * n.pow(-0.25)


def ldam_bce(logits: Tensor, targets: Tensor, margins: Tensor) -> Tensor:
    """LDAM-BCE: BCE-with-logits on ``logits - margins * targets`` (mean over notes and codes)."""
    return F.binary_cross_entropy_with_logits(logits - margins * targets, targets)


def icd_metrics(probs: Tensor, targets: Tensor, precision_at: Sequence[int] = (5,),
                threshold: float = 0.5) -> dict[str, float]:
    """CAML/TransICD metrics of probabilities (N, K) against multi-hot targets (N, K); see the module docstring."""
    probs, targets = probs.float(), targets.float()
    labels = targets.long()
    n_classes = probs.shape[1]
    out: dict[str, float] = {}
    flat_t = labels.flatten()
    out["micro_auc"] = float(binary_auroc(probs.flatten(), flat_t)) if 0 < flat_t.sum() < flat_t.numel() else float("nan")
    per_code = [float(binary_auroc(probs[:, k], labels[:, k])) for k in range(n_classes)
                if 0 < labels[:, k].sum() < len(labels)]
    out["macro_auc"] = float(np.mean(per_code)) if per_code else float("nan")
    kw = dict(num_labels=n_classes, threshold=threshold, zero_division=0)
    out["micro_f1"] = float(multilabel_f1_score(probs, labels, average="micro", **kw))
    macro_p = float(multilabel_precision(probs, labels, average="macro", **kw))
    macro_r = float(multilabel_recall(probs, labels, average="macro", **kw))
    out["macro_f1"] = 2 * macro_p * macro_r / (macro_p + macro_r) if macro_p + macro_r > 0 else 0.0
    out["macro_f1_labelwise"] = float(multilabel_f1_score(probs, labels, average="macro", **kw))
    for k in precision_at:
        top = probs.topk(min(k, n_classes), dim=1).indices
        out[f"p_at_{k}"] = float(targets.gather(1, top).sum(dim=1).div(k).mean())
    return out


class IcdCodingTask(BaseTask):
    """Multi-label ICD coding of notes with code-wise attention over any backbone.

    Args:
        backbone: the encoder (time tokens), e.g. a 2-layer 8-head transformer (paper).
        vocab_size: embedding rows (linked from data.vocab_size).
        n_classes: number of codes (linked from data.n_classes).
        seq_len: longest note (linked from data.max_len).
        loss: "ldam" (paper) or "bce".
        ldam_c: LDAM's C in Delta_k = C * n_k^(-1/4) (paper: 3).
        positions: "sinusoidal" (paper), "learned" or "none".
        attn_expansion: hidden width factor of the code-wise attention (paper code: 2).
        embed_dropout: dropout on the embeddings (paper: 0.1).
        precision_at: k of the reported P@k (5 for top-50; 8 and 15 for full).
        explain_top: attention-ranked evidence tokens returned per predicted code by predict.
        optimizer: optimiser factory (default: AdamW with torch's defaults, lr 1e-3 as the paper).
        lr_scheduler: optional scheduler factory.
    """

    monitor = "val/micro_f1"
    monitor_mode = "max"
    report_metrics = ("test/micro_f1", "test/macro_f1", "test/macro_f1_labelwise", "test/micro_auc",
                      "test/macro_auc", "test/p_at_5")
    report_modes = ("max",) * 6

    def __init__(
        self,
        backbone: Backbone,
        vocab_size: int,
        n_classes: int,
        seq_len: int,
        loss: LossKind = "ldam",
        ldam_c: float = 3.0,
        positions: Positions = "sinusoidal",
        attn_expansion: int = 2,
        embed_dropout: float = 0.1,
        precision_at: list[int] = [5],  # noqa: B006 (jsonargparse needs a plain default)
        explain_top: int = 5,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if loss not in ("ldam", "bce"):
            raise ConfigError(f"loss must be 'ldam' or 'bce', got {loss!r}")
        if n_classes < 1 or vocab_size < 3 or seq_len < 1:
            raise ConfigError(f"need n_classes >= 1, vocab_size >= 3, seq_len >= 1; got {n_classes}, {vocab_size}, "
                              f"{seq_len}")
        if ldam_c < 0:
            raise ConfigError(f"ldam_c must be >= 0, got {ldam_c}")
        if not precision_at or any(k < 1 for k in precision_at):
            raise ConfigError(f"precision_at must list positive k, got {precision_at}")
        self.loss_kind, self.ldam_c = loss, float(ldam_c)
        self.precision_at = tuple(int(k) for k in precision_at)
        self.explain_top = explain_top
        self.n_classes = n_classes
        self.net = IcdNet(backbone, vocab_size, n_classes, seq_len, positions=positions,
                          attn_expansion=attn_expansion, embed_dropout=embed_dropout)
        # Delta_k; zeros until the training label counts arrive (setup or set_label_counts)
        self.register_buffer("ldam_margin", torch.zeros(n_classes))
        self._counts_set = False
        self.outputs = nn.ModuleDict({
            stage: nn.ModuleDict({"probs": CatMetric(), "targets": CatMetric()}) for stage in ("val", "test")
        })

    # -- data hook ----------------------------------------------------------------------
    def set_label_counts(self, label_counts: Sequence[int] | Tensor) -> None:
        """Training positives per code (K,) -> LDAM margins."""
        counts = torch.as_tensor(np.asarray(label_counts), dtype=torch.float32)
        if counts.shape != (self.n_classes,):
            raise ConfigError(f"label counts must have shape ({self.n_classes},), got {tuple(counts.shape)}")
        self.ldam_margin.copy_(ldam_margins(counts, self.ldam_c))
        self._counts_set = True

    def setup(self, stage: str) -> None:
        if self.loss_kind != "ldam" or stage != "fit" or self._counts_set:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        hook = getattr(datamodule, "train_label_counts", None)
        if hook is None:
            raise ConfigError("loss='ldam' needs the training label counts: use a data module with "
                              "train_label_counts() (IcdDataModule) or call set_label_counts() first")
        self.set_label_counts(hook())

    # -- steps ----------------------------------------------------------------------------
    def forward(self, batch: Batch) -> Tensor:
        return self.net(batch["tokens"], batch.get("mask"))

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["tokens"].shape[1])

    def training_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.loss_kind == "ldam":
            if not self._counts_set:
                raise ConfigError("loss='ldam' but the training label counts were never set")
            return ldam_bce(logits, targets, self.ldam_margin)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch)
        loss = self.training_loss(logits, batch["targets"])
        self.log_metrics("train", {"loss": loss}, batch_size=len(logits), prog_bar=["loss"])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._update("val", batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._update("test", batch)

    def _update(self, stage: str, batch: Batch) -> None:
        logits = self(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch["targets"])
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(logits), sync_dist=True)
        self.outputs[stage]["probs"].update(torch.sigmoid(logits).float())
        self.outputs[stage]["targets"].update(batch["targets"].float())

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str, prog_bar: bool = False) -> None:
        store = self.outputs[stage]
        if store["probs"].update_count == 0:
            return
        probs, targets = store["probs"].compute(), store["targets"].compute()
        store["probs"].reset()
        store["targets"].reset()
        values = icd_metrics(probs.cpu(), targets.cpu(), self.precision_at)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=prog_bar, sync_dist=True)

    # -- explanation ------------------------------------------------------------------------
    @torch.no_grad()
    def explain(self, tokens: Tensor, mask: Tensor | None = None, top: int = 5,
                threshold: float = 0.5) -> tuple[Tensor, list[dict[int, list[tuple[int, int, float]]]]]:
        """Probabilities (B, K) and, per note, ``{code index: [(position, token id, weight), ...]}``
        for each code with probability >= ``threshold``: the ``top`` positions of largest attention."""
        logits, alpha = self.net.forward_with_attention(tokens, mask)
        probs = torch.sigmoid(logits)
        evidence = []
        for b in range(len(tokens)):
            note = {}
            for k in torch.nonzero(probs[b] >= threshold).flatten().tolist():
                weights, positions = alpha[b, k].topk(min(top, alpha.shape[-1]))
                note[k] = [(int(p), int(tokens[b, p]), float(w)) for p, w in zip(positions, weights) if w > 0]
            evidence.append(note)
        return probs, evidence

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """Probabilities and, per predicted code, its top attention words (codes/words named
        when the data module has ``labels``/``vocab``)."""
        probs, evidence = self.explain(batch["tokens"], batch.get("mask"), top=self.explain_top)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        labels = getattr(datamodule, "labels", None)
        vocab = getattr(datamodule, "vocab", None)
        named = []
        for note in evidence:
            named.append({
                (labels[k] if labels else k): [(vocab.itos[t] if vocab else t, round(w, 4)) for _, t, w in items]
                for k, items in note.items()
            })
        return {"probs": probs.cpu(), "index": batch["index"].cpu() if "index" in batch else None,
                "evidence": named}

    # -- baselines and export ---------------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> list[tuple[str, dict[str, float]]]:
        """Test metrics of the training prior and of TF-IDF + logistic regression (needs the
        data hooks ``split_targets`` / ``split_texts``)."""
        train_y = datamodule.split_targets("train")
        test_y = torch.as_tensor(datamodule.split_targets("test"))
        prior = torch.as_tensor(train_y.mean(axis=0), dtype=torch.float32).expand_as(test_y)
        results = [("training prior", icd_metrics(prior, test_y, self.precision_at))]
        probs = tfidf_logistic_regression(datamodule.split_texts("train"), train_y, datamodule.split_texts("test"))
        results.append(("TF-IDF + logistic regression",
                        icd_metrics(torch.as_tensor(probs, dtype=torch.float32), test_y, self.precision_at)))
        return [(name, {f"test/{k}": v for k, v in values.items()}) for name, values in results]

    def export_spec(self) -> ExportSpec:
        net = self.net.eval().cpu()
        module = IcdProbabilities(net).eval()
        vocab = net.embed.num_embeddings
        gen = torch.Generator().manual_seed(0)
        free_length = not type(net.backbone).export_fixed_length

        def make(b: int, n: int) -> tuple[Tensor, Tensor]:
            tokens = torch.randint(2, vocab, (b, n), generator=gen)
            lengths = torch.randint(max(1, n // 2), n + 1, (b,), generator=gen)
            lengths[0] = n
            mask = torch.arange(n)[None, :] < lengths[:, None]
            return tokens.masked_fill(~mask, 0), mask

        length = min(24, net.seq_len)
        lengths = [length, min(length + 9, net.seq_len)] if free_length else [length]
        dynamic = {"tokens": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}} if free_length else \
            {"tokens": {0: "batch"}, "mask": {0: "batch"}}
        return ExportSpec(module=module, example_inputs=make(2, length), input_names=["tokens", "mask"],
                          output_names=["probabilities"], dynamic=dynamic,
                          check_inputs=sequence_inputs([2, 3], lengths, make))


def tfidf_logistic_regression(train_texts: list[str], train_y: np.ndarray, test_texts: list[str],
                              max_features: int = 20000, C: float = 10.0) -> np.ndarray:
    """One L2 logistic regression per code on TF-IDF unigrams+bigrams (sublinear tf); codes with a
    single class in training are scored with their training frequency."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(max_features=max_features, ngram_range=(1, 2), sublinear_tf=True,
                                 token_pattern=r"\S+")
    x_train = vectorizer.fit_transform(train_texts)
    x_test = vectorizer.transform(test_texts)
    probs = np.empty((x_test.shape[0], train_y.shape[1]))
    for k in range(train_y.shape[1]):
        y = train_y[:, k]
        if y.min() == y.max():
            probs[:, k] = y.mean()
            continue
        model = LogisticRegression(C=C, max_iter=1000, solver="liblinear")
        probs[:, k] = model.fit(x_train, y).predict_proba(x_test)[:, 1]
    return probs
