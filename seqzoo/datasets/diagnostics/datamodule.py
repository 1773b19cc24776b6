"""LightningDataModules of the diagnostic probes: data generated in memory from a seed.

One module per probe, each taking that probe's knobs as init arguments (so ``--help`` lists
them and ``seqzoo sweep --knob data.n_pairs`` can vary one). ``dims`` (``vocab_size``,
``n_classes``, ``seq_len``) come from the init arguments alone. ``setup`` draws train, val
and test from independent streams of ``seed`` (validation and test sequences never repeat
a training one), so the same seed gives the same data on every run and rank.

Batches are ``{"tokens": int64 (B, L), "targets": int64 (B, L)}`` with -100 where a
position is not scored. The one hook for baselines is :meth:`answers` (the scored targets
of a split).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule
from seqzoo.datasets.diagnostics.synthetic import (
    IGNORE,
    SPLITS,
    MultiQueryAssociativeRecall,
    PasskeyRetrieval,
    Probe,
    SelectivBenchGrammar,
    SelectiveCopying,
    generate_splits,
)
from seqzoo.errors import ConfigError


class TokenSequences(Dataset):
    """``{"tokens": (L,), "targets": (L,)}`` items from int64 arrays (N, L)."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        self.inputs, self.targets = torch.as_tensor(inputs), torch.as_tensor(targets)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.inputs[i], "targets": self.targets[i]}


class DiagnosticsDataModule(BaseDataModule):
    """Shared part: split sizes, the data seed, loaders. Subclasses build ``self.probe``."""

    dim_names: ClassVar[tuple[str, ...]] = ("vocab_size", "n_classes", "seq_len")

    def __init__(self, n_train: int, n_val: int, n_test: int, seed: int, batch_size: int, num_workers: int) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.seed = seed
        self.probe: Probe

    def data_ready(self) -> bool:
        """Always: nothing is read from disk, ``setup`` generates the splits from the seed."""
        return True

    @property
    def dims(self) -> dict[str, int]:
        return {"vocab_size": self.probe.vocab_size, "n_classes": self.probe.n_classes, "seq_len": self.probe.length}

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            splits = generate_splits(self.probe, self.sizes, self.seed)
            self.datasets = {split: TokenSequences(*splits[split]) for split in SPLITS}

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per test sequence: ``sequence`` (its index in the test split), ``answers``
        (scored positions), ``correct``, ``accuracy``, ``all_correct``, and the predicted and
        true answer tokens at the scored positions (space-separated, in order)."""
        self.setup()
        targets = self.datasets["test"].targets
        pred = torch.as_tensor(predictions).long().cpu()
        if pred.shape != targets.shape:
            raise ValueError(f"predictions {tuple(pred.shape)} do not match the test targets {tuple(targets.shape)}")
        rows = []
        for i, (p_row, t_row) in enumerate(zip(pred, targets)):
            scored = t_row != IGNORE
            p_ans, t_ans = p_row[scored].tolist(), t_row[scored].tolist()
            correct = sum(a == b for a, b in zip(p_ans, t_ans))
            rows.append({"sequence": i, "answers": len(t_ans), "correct": correct,
                         "accuracy": correct / len(t_ans) if t_ans else float("nan"),
                         "all_correct": correct == len(t_ans),
                         "predicted": " ".join(map(str, p_ans)), "true": " ".join(map(str, t_ans))})
        return pd.DataFrame(rows)

    def answers(self, split: str) -> np.ndarray:
        """The scored targets of a split, flattened (for baselines)."""
        self.setup()
        targets = self.datasets[split].targets.numpy()
        return targets[targets != IGNORE]


class MQARDataModule(DiagnosticsDataModule):
    """Multi-query associative recall (Zoology)."""

    def __init__(
        self,
        vocab_size: int = 64,
        seq_len: int = 64,
        n_pairs: int = 8,
        n_queries: int | None = None,
        power_a: float = 0.01,
        n_train: int = 10000,
        n_val: int = 500,
        n_test: int = 1000,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            vocab_size: tokens; keys from [1, V/2), values from [V/2, V).
            seq_len: sequence length (even): the pairs, then the query region.
            n_pairs: key-value pairs per sequence.
            n_queries: keys queried again (default: all n_pairs, as Zoology).
            power_a: power-law exponent of the query gaps (Zoology: 0.01; 1 = uniform).
            n_train: training sequences.
            n_val: validation sequences.
            n_test: test sequences.
            seed: data seed (train/val/test are independent streams of it).
            batch_size: sequences per batch.
            num_workers: DataLoader workers.
        """
        super().__init__(n_train, n_val, n_test, seed, batch_size, num_workers)
        self.probe = MultiQueryAssociativeRecall(vocab_size=vocab_size, seq_len=seq_len, n_pairs=n_pairs,
                                                 n_queries=n_queries, power_a=power_a)


class SelectiveCopyDataModule(DiagnosticsDataModule):
    """Selective copying (Mamba)."""

    def __init__(
        self,
        vocab_size: int = 16,
        seq_len: int = 64,
        n_copy: int = 8,
        n_train: int = 10000,
        n_val: int = 500,
        n_test: int = 1000,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            vocab_size: tokens: noise (0), copy cue (1) and data tokens 2..V-1.
            seq_len: context plus the n_copy cue positions.
            n_copy: data tokens to copy back, in order.
            n_train: training sequences.
            n_val: validation sequences.
            n_test: test sequences.
            seed: data seed (train/val/test are independent streams of it).
            batch_size: sequences per batch.
            num_workers: DataLoader workers.
        """
        super().__init__(n_train, n_val, n_test, seed, batch_size, num_workers)
        self.probe = SelectiveCopying(vocab_size=vocab_size, seq_len=seq_len, n_copy=n_copy)


class SelectivBenchDataModule(DiagnosticsDataModule):
    """SelectivBench-style grammar with rule-breaking gaps."""

    def __init__(
        self,
        n_symbols: int = 12,
        n_states: int = 20,
        branching: int = 3,
        seq_len: int = 64,
        gap_prob: float = 0.3,
        gap_min: int = 1,
        gap_max: int = 6,
        grammar_seed: int = 0,
        n_train: int = 10000,
        n_val: int = 500,
        n_test: int = 1000,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            n_symbols: grammar symbols (= input tokens; distractors are symbols too).
            n_states: hidden grammar states (answer classes); n_states - n_symbols are ambiguous.
            branching: successors per state (fewer than n_symbols - 1).
            seq_len: tokens per sequence.
            gap_prob: probability that a gap of distractors follows a grammatical token.
            gap_min: shortest gap.
            gap_max: longest gap (uniform in [gap_min, gap_max]).
            grammar_seed: seed of the grammar (shared by all splits and data seeds).
            n_train: training sequences.
            n_val: validation sequences.
            n_test: test sequences.
            seed: data seed (train/val/test are independent streams of it).
            batch_size: sequences per batch.
            num_workers: DataLoader workers.
        """
        super().__init__(n_train, n_val, n_test, seed, batch_size, num_workers)
        self.probe = SelectivBenchGrammar(n_symbols=n_symbols, n_states=n_states, branching=branching,
                                          seq_len=seq_len, gap_prob=gap_prob, gap_min=gap_min, gap_max=gap_max,
                                          grammar_seed=grammar_seed)


class PasskeyDataModule(DiagnosticsDataModule):
    """Passkey retrieval (Stuffed Mamba's state-capacity probe)."""

    def __init__(
        self,
        vocab_size: int = 32,
        seq_len: int = 64,
        passkey_len: int = 5,
        n_train: int = 10000,
        n_val: int = 500,
        n_test: int = 1000,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            vocab_size: tokens: marker, cue, ten digits and filler (>= 13).
            seq_len: context length (the state-capacity sweep varies it).
            passkey_len: digits of the passkey.
            n_train: training sequences.
            n_val: validation sequences.
            n_test: test sequences.
            seed: data seed (train/val/test are independent streams of it).
            batch_size: sequences per batch.
            num_workers: DataLoader workers.
        """
        super().__init__(n_train, n_val, n_test, seed, batch_size, num_workers)
        self.probe = PasskeyRetrieval(vocab_size=vocab_size, seq_len=seq_len, passkey_len=passkey_len)
