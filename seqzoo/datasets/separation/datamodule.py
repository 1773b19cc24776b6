"""The separation DataModule: training crops, whole-utterance validation and test."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, prediction_items, require_path
from seqzoo.datasets.separation.reader import (
    LIBRI_SPLITS,
    MixtureRecord,
    WSJ0_SPLITS,
    _require_soundfile,
    index_libri_mix,
    index_wsj0_mix,
    read_audio,
    write_audio,
)
from seqzoo.errors import ConfigError


class MixtureDataset(Dataset):
    """Mixture and sources of each record at ``sample_rate``; random crops of ``segment``
    samples when given (shorter mixtures are kept whole), else whole utterances."""

    def __init__(self, records: list[MixtureRecord], sample_rate: int, segment: int | None = None,
                 random_crop: bool = True) -> None:
        self.records, self.sample_rate = records, sample_rate
        self.segment, self.random_crop = segment, random_crop

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self.records[i]
        mix = read_audio(rec.mixture, self.sample_rate)
        sources = np.stack([read_audio(p, self.sample_rate) for p in rec.sources])
        n = mix.shape[0]
        if self.segment is not None and n > self.segment:
            start = int(torch.randint(0, n - self.segment + 1, ()).item()) if self.random_crop else 0
            mix, sources = mix[start : start + self.segment], sources[:, start : start + self.segment]
        return {"mix": torch.from_numpy(np.ascontiguousarray(mix)),
                "sources": torch.from_numpy(np.ascontiguousarray(sources))}


def collate_mixtures(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item with zeros; ``lengths`` holds each item's samples."""
    lengths = torch.tensor([it["mix"].shape[0] for it in items])
    T = int(lengths.max())
    mix = torch.zeros(len(items), T)
    sources = torch.zeros(len(items), items[0]["sources"].shape[0], T)
    for b, it in enumerate(items):
        mix[b, : lengths[b]] = it["mix"]
        sources[b, :, : lengths[b]] = it["sources"]
    return {"mix": mix, "sources": sources, "lengths": lengths}


class SeparationDataModule(BaseDataModule):
    """WSJ0-2mix or Libri2Mix mixtures: train crops, whole-utterance validation and test.

    Args:
        path: the dataset root.
        layout: ``wsj0-2mix`` or ``libri2mix``.
        n_sources: speakers per mixture.
        sample_rate: rate the audio is read at (resampled when the files differ).
        segment: training crop length in seconds.
        val_segment: validation crop length in seconds (default: whole utterances).
        libri_splits: Libri2Mix split names per train/val/test.
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (whole utterances, padded).
        num_workers: DataLoader workers.
        prepare: what writes ``path`` when it is missing (``speech-mix``, ``synth:separation``).
    """

    collate_fn = staticmethod(collate_mixtures)
    data_name = "separation data"

    def __init__(
        self,
        path: str,
        layout: Literal["wsj0-2mix", "libri2mix"] = "wsj0-2mix",
        n_sources: int = 2,
        sample_rate: int = 8000,
        segment: float = 2.0,
        val_segment: float | None = None,
        libri_splits: dict[str, str] | None = None,
        batch_size: int = 4,
        eval_batch_size: int = 1,
        num_workers: int = 0,
        prepare: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare,
                         eval_batch_size=eval_batch_size)
        if layout not in ("wsj0-2mix", "libri2mix"):
            raise ConfigError(f"layout must be 'wsj0-2mix' or 'libri2mix', got {layout!r}")
        if n_sources < 2:
            raise ConfigError(f"n_sources must be >= 2, got {n_sources}")
        if segment <= 0 or (val_segment is not None and val_segment <= 0):
            raise ConfigError(f"segment and val_segment must be positive seconds, got {segment}, {val_segment}")
        self.path, self.layout = path, layout
        self.n_sources, self.sample_rate = n_sources, sample_rate
        self.segment, self.val_segment = segment, val_segment
        self.libri_splits = {**LIBRI_SPLITS, **(libri_splits or {})}
        self.records: dict[str, list[MixtureRecord]] = {}

    @property
    def dims(self) -> dict[str, int]:
        return {"n_sources": self.n_sources}

    def data_ready(self) -> bool:
        return Path(self.path).exists()

    def missing_data_hint(self) -> str:
        return ("put WSJ0-2mix ({tr,cv,tt}/{mix,s1,s2}/*.wav) or Libri2Mix (metadata/mixture_<split>_mix_clean.csv) "
                "there, or write mixtures with `seqzoo data prepare speech-mix --out DIR` (real speech) or "
                "`seqzoo data synth separation --out DIR`")

    def split_records(self, split: str) -> list[MixtureRecord]:
        if split not in self.records:
            _require_soundfile()
            self.require_data()
            if self.layout == "wsj0-2mix":
                self.records[split] = index_wsj0_mix(self.path, WSJ0_SPLITS[split], self.n_sources)
            else:
                name = self.libri_splits[split]
                csv = require_path(Path(self.path) / "metadata" / f"mixture_{name}_mix_clean.csv",
                                   "Libri2Mix metadata CSV", hint="set libri_splits to the split names you have")
                self.records[split] = index_libri_mix(csv, self.path, self.n_sources)
        return self.records[split]

    # -- predictions as audio ------------------------------------------------------------
    def transform_state(self) -> dict:
        return {"kind": "separation", "sample_rate": self.sample_rate, "n_sources": self.n_sources}

    def _estimates(self, predictions) -> list:
        items = prediction_items(predictions)
        records = self.split_records("test")
        if len(items) != len(records):
            raise ValueError(f"expected {len(records)} estimates (one per test mixture), got {len(items)}")
        return list(zip(records, items))

    def prediction_files(self, predictions, folder: Path) -> None:
        """Each test mixture's separated sources as ``<folder>/<mixture id>_s<k>.wav`` at the
        data's sample rate (32-bit float: the estimates' scale is free under SI-SNR training)."""
        for record, estimate in self._estimates(predictions):
            for k, source in enumerate(torch.as_tensor(estimate).float().numpy(), 1):
                write_audio(Path(folder) / f"{record.mixture_id}_s{k}.wav", source, self.sample_rate, subtype="FLOAT")

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per test mixture: its id, file and duration, and the written estimates."""
        rows = []
        for record, estimate in self._estimates(predictions):
            n = torch.as_tensor(estimate).shape[-1]
            rows.append({"mixture_id": record.mixture_id, "mixture": str(record.mixture),
                         "seconds": round(n / self.sample_rate, 4), "sample_rate": self.sample_rate,
                         **{f"s{k}": f"predictions/{record.mixture_id}_s{k}.wav" for k in range(1, self.n_sources + 1)}})
        return pd.DataFrame(rows)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            if split in self.datasets:
                continue
            seconds = {"train": self.segment, "val": self.val_segment}.get(split)
            segment = int(round(seconds * self.sample_rate)) if seconds else None
            self.datasets[split] = MixtureDataset(self.split_records(split), self.sample_rate, segment,
                                                  random_crop=split == "train")
