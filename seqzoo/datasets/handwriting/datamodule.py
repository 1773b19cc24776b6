"""The handwriting DataModule: one OnHW fold, padded sequence batches."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, prediction_items
from seqzoo.datasets.handwriting.reader import (
    CHANNEL_NAMES,
    N_CHANNELS,
    Split,
    detect_format,
    read_onhw_chars,
    read_onhw_words,
)
from seqzoo.errors import ConfigError, DataError


class SequenceDataset(Dataset):
    """Normalised IMU sequences with their label ids (1..n_classes; 0 is the CTC blank)."""

    def __init__(self, sequences: list[np.ndarray], targets: list[list[int]]) -> None:
        self.sequences = [torch.from_numpy(s) for s in sequences]
        self.targets = [torch.tensor(t, dtype=torch.long) for t in targets]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.sequences[i], "target": self.targets[i]}


def collate_sequences(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad inputs (zeros) and targets (blank 0); keep both lengths."""
    lengths = torch.tensor([it["x"].shape[0] for it in items])
    target_lengths = torch.tensor([it["target"].shape[0] for it in items])
    x = torch.zeros(len(items), int(lengths.max()), items[0]["x"].shape[1])
    targets = torch.zeros(len(items), int(target_lengths.max()), dtype=torch.long)
    for b, it in enumerate(items):
        x[b, : lengths[b]] = it["x"]
        targets[b, : target_lengths[b]] = it["target"]
    return {"x": x, "lengths": lengths, "targets": targets, "target_lengths": target_lengths}


class HandwritingDataModule(BaseDataModule):
    """One OnHW fold (chars or words format): train / validation (from train) / test.

    Args:
        path: the folder holding the folds.
        alphabet: the label characters in class order (class i + 1 is ``alphabet[i]``; 0 is the
            CTC blank), e.g. ``abcdefghijklmnopqrstuvwxyz`` or ``0123456789``; ``setup``
            checks that every training and test character is in it.
        fold: the fold folder under ``path`` (``chars_indep_0``, ``words_dep/0``...).
        format: ``chars``, ``words`` or ``auto`` (from the files present).
        val_fraction: seeded fraction of the training part held out for validation.
        normalise: standardise channels with training statistics.
        seed: seed of the validation hold-out.
        batch_size: training batch size.
        num_workers: DataLoader workers.
        prepare: what writes ``path`` when the fold is missing (``synth:handwriting``, ``keel-penbased``).
    """

    collate_fn = staticmethod(collate_sequences)
    target_key = "target"
    data_name = "OnHW data"

    def __init__(
        self,
        path: str,
        alphabet: str,
        fold: str = "",
        format: Literal["auto", "chars", "words"] = "auto",
        val_fraction: float = 0.1,
        normalise: bool = True,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        prepare: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare)
        if format not in ("auto", "chars", "words"):
            raise ConfigError(f"format must be 'auto', 'chars' or 'words', got {format!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if not alphabet or len(set(alphabet)) != len(alphabet):
            raise ConfigError(f"alphabet must be a non-empty string of distinct characters, got {alphabet!r}")
        self.path, self.fold, self.format, self.alphabet = path, fold, format, alphabet
        self.val_fraction, self.normalise, self.seed = val_fraction, normalise, seed
        self.splits: dict[str, Split] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    @property
    def fold_dir(self) -> Path:
        return Path(self.path) / self.fold

    @property
    def dims(self) -> dict:
        return {"n_channels": N_CHANNELS, "n_classes": len(self.alphabet), "alphabet": self.alphabet}

    def data_ready(self) -> bool:
        return self.fold_dir.is_dir()

    def missing_data_hint(self) -> str:
        return (f"the fold {self.fold_dir} is missing -- put an OnHW-chars or OnHW-words fold there, or write one "
                "with `seqzoo data synth handwriting --out DIR` or `seqzoo data prepare keel-penbased --out DIR`")

    def _read(self) -> None:
        if self.splits is not None:
            return
        self.require_data()
        kind = detect_format(self.fold_dir) if self.format == "auto" else self.format
        raw = read_onhw_chars(self.fold_dir) if kind == "chars" else read_onhw_words(self.fold_dir)
        train_x, train_y = raw["train"]
        order = np.random.default_rng(self.seed).permutation(len(train_x))
        n_val = int(round(self.val_fraction * len(train_x)))
        if self.val_fraction > 0 and not 1 <= n_val < len(train_x):
            raise DataError(f"{self.fold_dir}: {len(train_x)} training records cannot give a validation "
                            f"fraction of {self.val_fraction}")
        val_idx, train_idx = order[:n_val], order[n_val:]
        self.splits = {
            "train": ([train_x[i] for i in train_idx], [train_y[i] for i in train_idx]),
            "val": ([train_x[i] for i in val_idx], [train_y[i] for i in val_idx]) if n_val else raw["test"],
            "test": raw["test"],
        }
        for part in ("train", "test"):
            unknown = sorted({c for label in raw[part][1] for c in label} - set(self.alphabet))
            if unknown:
                raise DataError(f"{self.fold_dir}: {part} labels use characters {unknown} that are not in "
                                f"data.alphabet {self.alphabet!r}")
        fitted = self.fitted_transform
        if fitted:  # a trained model's normalisation: nothing refitted on this data
            if fitted["alphabet"] != self.alphabet:
                raise DataError(f"{self.fold_dir}: data.alphabet {self.alphabet!r} differs from the trained "
                                f"model's {fitted['alphabet']!r}")
            self.mean, self.std = np.asarray(fitted["mean"]), np.asarray(fitted["std"])
        else:
            stacked = np.concatenate(self.splits["train"][0])
            self.mean, self.std = stacked.mean(axis=0), stacked.std(axis=0) + 1e-6

    # -- the fitted transform and predictions ----------------------------------------------
    def transform_state(self) -> dict:
        """The channel normalisation fitted on the training split and the alphabet."""
        if getattr(self, "mean", None) is None:
            return dict(self.fitted_transform or {})
        return {"kind": "handwriting", "alphabet": self.alphabet, "channels": list(CHANNEL_NAMES),
                "mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist()}

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per test sequence: the predicted text (a character, or a word by greedy CTC)
        and the true one."""
        predicted = prediction_items(predictions)
        truth = list(self.splits["test"][1])
        if len(predicted) != len(truth):
            raise ValueError(f"expected {len(truth)} predictions (one per test sequence), got {len(predicted)}")
        return pd.DataFrame({"predicted": predicted, "true": truth,
                             "correct": [p == t for p, t in zip(predicted, truth)]})

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._read()
        index = {c: i + 1 for i, c in enumerate(self.alphabet)}
        for split, (sequences, labels) in self.splits.items():
            if self.normalise:
                sequences = [((s - self.mean) / self.std).astype(np.float32) for s in sequences]
            self.datasets[split] = SequenceDataset(sequences, [[index[c] for c in label] for label in labels])
