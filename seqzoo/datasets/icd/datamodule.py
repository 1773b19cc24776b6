"""LightningDataModule for ICD coding: CAML-format notes -> padded token ids, masks, multi-hot codes.

Batches: ``{"tokens": int64 (B, S), "mask": bool (B, S) valid positions, "targets": float (B, K),
"index": int64 (B,)}`` with ``S`` the longest note of the batch (at most ``max_len``); padding is
``PAD`` = 0 and ``mask`` False there.

``dims`` come from the init arguments only (``vocab_size``, ``n_classes``, ``seq_len`` =
``max_len``), so the model can be built before any data is read: the vocabulary size is fixed
by configuration and the training split's words beyond it (or below ``min_df``) map to
``UNK``. ``setup`` checks that the data's label set has exactly ``n_classes`` codes.

Data hooks for the task (documented, the only ways data reaches it besides batches):
``train_label_counts()`` (positives per code in the training split, for LDAM's margins) and
``split_texts(split)`` / ``split_targets(split)`` for the TF-IDF baseline.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule
from seqzoo.datasets.icd.reader import PAD_ID, Notes, Vocabulary, encode_split, read_caml, split_path
from seqzoo.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class NoteDataset(Dataset):
    """Encoded notes: ``{"tokens": (S_i,), "targets": (K,), "index": ()}`` items."""

    def __init__(self, ids: list[np.ndarray], targets: np.ndarray) -> None:
        self.ids = [torch.from_numpy(x) for x in ids]
        self.targets = torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.ids[i], "targets": self.targets[i], "index": torch.tensor(i)}


def collate_notes(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad token ids with PAD to the batch's longest note; ``mask`` marks real tokens."""
    longest = max(len(item["tokens"]) for item in items)
    tokens = torch.full((len(items), longest), PAD_ID, dtype=torch.long)
    mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for i, item in enumerate(items):
        n = len(item["tokens"])
        tokens[i, :n] = item["tokens"]
        mask[i, :n] = True
    return {"tokens": tokens, "mask": mask, "targets": torch.stack([x["targets"] for x in items]),
            "index": torch.stack([x["index"] for x in items])}


class IcdDataModule(BaseDataModule):
    """Discharge summaries in the CAML layout (``{train,dev,test}_<version>.csv``).

    Args:
        path: folder with the split CSVs (see ``seqzoo.datasets.icd.reader``).
        version: file suffix: ``50`` (top-50), ``full``, or the synthetic set's code count.
        n_classes: size of the label set; must equal the data's (checked in setup).
        vocab_size: embedding rows including PAD and UNK; the most frequent training words fill it.
        min_df: a word enters the vocabulary when it is in at least this many training notes.
        max_len: notes longer than this many words are truncated (the count is logged).
        label_file: label set file (one code per line); default ``TOP_<version>_CODES.csv`` if present.
        batch_size: notes per training batch.
        num_workers: DataLoader workers.
        eval_batch_size: notes per validation/test batch (default batch_size).
        prepare: data source written to ``path`` when it is missing (``synth:icd``); MIMIC is never fetched.
        synth_options: keyword arguments of ``seqzoo data synth icd`` (n_train, max_len, seed...) for ``prepare``.
    """

    dim_names: ClassVar[tuple[str, ...]] = ("vocab_size", "n_classes", "seq_len")
    collate_fn = staticmethod(collate_notes)
    target_key = "targets"
    data_name = "ICD notes"

    def __init__(
        self,
        path: str,
        version: str = "50",
        n_classes: int = 50,
        vocab_size: int = 30000,
        min_df: int = 3,
        max_len: int = 2500,
        label_file: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        prepare: str | None = None,
        synth_options: dict[str, Any] | None = None,
        eval_batch_size: int | None = None,
    ) -> None:
        if prepare is not None and prepare != "synth:icd":
            raise ConfigError(f"prepare must be 'synth:icd' (MIMIC-III is never fetched: run `seqzoo data prepare "
                              f"mimic3 --mimic_dir ...` on your copy), got {prepare!r}")
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare,
                         eval_batch_size=eval_batch_size)
        if n_classes < 1:
            raise ConfigError(f"n_classes must be >= 1, got {n_classes}")
        if vocab_size < 3:
            raise ConfigError(f"vocab_size must be >= 3 (PAD, UNK and one word), got {vocab_size}")
        if min_df < 1:
            raise ConfigError(f"min_df must be >= 1, got {min_df}")
        if max_len < 1:
            raise ConfigError(f"max_len must be >= 1, got {max_len}")
        self.path, self.version, self.n_classes = path, str(version), n_classes
        self.vocab_size, self.min_df, self.max_len = vocab_size, min_df, max_len
        self.label_file = label_file
        self.synth_options = dict(synth_options or {})
        self.notes: dict[str, Notes] = {}
        self.labels: list[str] = []
        self.vocab: Vocabulary | None = None
        self.datasets: dict[str, NoteDataset] = {}

    @property
    def dims(self) -> dict[str, int]:
        return {"vocab_size": self.vocab_size, "n_classes": self.n_classes, "seq_len": self.max_len}

    def data_ready(self) -> bool:
        return all(split_path(self.path, name, self.version).is_file() for name in ("train", "val", "test"))

    def prepare_options(self) -> dict[str, Any]:
        return dict(self.synth_options)

    def missing_data_hint(self) -> str:
        return (f"put CAML-format train/dev/test_{self.version}.csv there (`seqzoo data prepare mimic3 --mimic_dir "
                f"DIR --out {self.path}` from your MIMIC-III copy) or write synthetic notes with "
                f"`seqzoo data synth icd --out {self.path}` (or set data.prepare: synth:icd)")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.require_data()
        self.notes, self.labels = read_caml(self.path, self.version, self.label_file)
        if len(self.labels) != self.n_classes:
            raise ConfigError(f"{self.path}: the data has {len(self.labels)} codes but data.n_classes is "
                              f"{self.n_classes} -- set data.n_classes: {len(self.labels)}")
        fitted = self.fitted_transform
        if fitted:  # a trained model's vocabulary and code order: nothing rebuilt from this data
            if list(fitted["labels"]) != list(self.labels):
                raise DataError(f"{self.path}: its codes {list(self.labels)[:8]}... differ from the trained model's "
                                f"{list(fitted['labels'])[:8]}... (same label set and order needed)")
            self.vocab = Vocabulary(fitted["vocab"])
        else:
            self.vocab = Vocabulary.build(self.notes["train"].words, self.vocab_size, self.min_df)
        for name, notes in self.notes.items():
            ids, targets = encode_split(notes, self.vocab, self.labels, self.max_len,
                                        where=str(split_path(self.path, name, self.version)))
            self.datasets[name] = NoteDataset(ids, targets)
        unk = sum(int((x == 1).sum()) for x in self.datasets["train"].ids)
        total = sum(len(x) for x in self.datasets["train"].ids)
        log.info("ICD vocabulary: %d of %d rows used; %.2f%% of training tokens are UNK",
                 len(self.vocab), self.vocab_size, 100.0 * unk / max(total, 1))

    # -- the fitted transform and predictions in the user's terms -------------------------
    def transform_state(self) -> dict:
        """The vocabulary (built from the training notes), the code order and the length cap."""
        if self.vocab is None:
            return dict(self.fitted_transform or {})
        return {"kind": "icd", "vocab": self.vocab.itos[2:], "labels": list(self.labels), "max_len": self.max_len}

    def prediction_table(self, predictions) -> pd.DataFrame | None:
        """One row per test note: HADM_ID, the predicted codes (probability >= 0.5, ';'-joined)
        with their probabilities, the true codes, each predicted code's top evidence words
        (``code: word word ... | code: ...``, from its code-wise attention) and ``p_<code>``."""
        batches = [p for p in predictions if isinstance(p, dict) and "probs" in p]
        if not batches:
            return None
        probs = torch.cat([b["probs"] for b in batches]).double().numpy()
        evidence = [note for b in batches for note in b["evidence"]]
        if all(b.get("index") is not None for b in batches):  # back into the notes' order
            order = np.argsort(torch.cat([b["index"] for b in batches]).numpy(), kind="stable")
            probs, evidence = probs[order], [evidence[i] for i in order]
        notes = self.notes["test"]
        if len(probs) != len(notes):
            raise ValueError(f"expected {len(notes)} predictions (one per test note), got {len(probs)}")
        labels = list(self.labels)
        predicted = [[j for j in np.argsort(-row) if row[j] >= 0.5] for row in probs]
        table = pd.DataFrame({
            "HADM_ID": notes.hadm_ids,
            "predicted_codes": [";".join(labels[j] for j in js) for js in predicted],
            "probabilities": [";".join(f"{row[j]:.3f}" for j in js) for row, js in zip(probs, predicted)],
            "true_codes": [";".join(codes) for codes in notes.codes],
            "evidence": [" | ".join(f"{labels[j]}: " + " ".join(str(w) for w, _ in note.get(labels[j], ()))
                                    for j in js) for note, js in zip(evidence, predicted)],
        })
        for j, code in enumerate(labels):
            table[f"p_{code}"] = probs[:, j]
        return table

    # -- hooks for the task (see the module docstring) ----------------------------------
    def train_label_counts(self) -> np.ndarray:
        """Positive notes per code in the training split, (K,), in label order."""
        self.setup("fit")
        return self.datasets["train"].targets.sum(dim=0).numpy().astype(np.int64)

    def split_texts(self, split: str) -> list[str]:
        """The split's notes as the model sees them (truncated to ``max_len`` words)."""
        self.setup("fit")
        return [" ".join(words[: self.max_len]) for words in self.notes[split].words]

    def split_targets(self, split: str) -> np.ndarray:
        self.setup("fit")
        return self.datasets[split].targets.numpy()
