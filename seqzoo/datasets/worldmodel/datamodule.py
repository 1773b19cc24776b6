"""The world-model DataModule: episodes cut into fixed-length training sequences.

Every split's episode files (:mod:`seqzoo.datasets.worldmodel.reader`) are cut into
windows of ``seq_len`` steps starting at 0, ``stride``, 2 ``stride`` ... (the tail shorter
than a window is dropped; an episode shorter than ``seq_len`` is an error naming it).
A window keeps the ``is_first`` flag of its first step as True, so a window that starts
mid-episode starts the model from a blank state, as Dreamer's replay chunks do.

Batches: ``image`` (B, L, H, W, 3) uint8, ``action`` (B, L, A) float32, ``reward`` (B, L)
float32, ``is_first`` (B, L) bool. ``dims`` (image size, channels, action width, length)
come from the init arguments alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from seqzoo.datasets.base import BaseDataModule, SplitLoaders
from seqzoo.datasets.worldmodel.reader import SPLITS, ActionSpace, Episode, episode_files, read_episode, read_metadata
from seqzoo.errors import ConfigError, DataError


class EpisodeWindows(Dataset):
    """Fixed-length windows over a list of episodes."""

    def __init__(self, episodes: list[Episode], names: list[str], seq_len: int, stride: int) -> None:
        self.episodes, self.names = episodes, list(names)
        self.index: list[tuple[int, int]] = []
        for e, (episode, name) in enumerate(zip(episodes, names)):
            if len(episode) < seq_len:
                raise DataError(f"{name}: {len(episode)} steps, shorter than data.seq_len = {seq_len}")
            self.index += [(e, start) for start in range(0, len(episode) - seq_len + 1, stride)]
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, start = self.index[i]
        episode, window = self.episodes[e], slice(start, start + self.seq_len)
        is_first = episode.is_first[window].copy()
        is_first[0] = True
        return {"image": torch.from_numpy(np.ascontiguousarray(episode.image[window])),
                "action": torch.from_numpy(episode.action[window]),
                "reward": torch.from_numpy(episode.reward[window]),
                "is_first": torch.from_numpy(is_first)}


class WorldModelDataModule(SplitLoaders, BaseDataModule):
    """Episodes in the ``.npz`` format, cut into windows of ``seq_len`` steps."""

    dim_names: ClassVar[tuple[str, ...]] = ("image_size", "in_chans", "action_dim", "seq_len")
    data_name: ClassVar[str] = "world-model episode folder"

    def __init__(
        self,
        path: str,
        image_size: int,
        action_dim: int,
        seq_len: int,
        stride: int | None = None,
        action_space: ActionSpace = "one_hot",
        action_low: float = -1.0,
        action_high: float = 1.0,
        batch_size: int = 16,
        num_workers: int = 0,
        prepare: str | None = None,
    ) -> None:
        """
        Args:
            path: dataset root holding train/, val/, test/ folders of .npz episodes.
            image_size: frame height and width (every frame must have it).
            action_dim: action width A (every episode's action rows must have it).
            seq_len: steps per training/evaluation window.
            stride: steps between window starts (default: seq_len, non-overlapping windows).
            action_space: 'one_hot' (discrete actions) or 'box' (continuous in [action_low, action_high]).
            action_low: lower bound of a box action space.
            action_high: upper bound of a box action space.
            batch_size: windows per batch.
            num_workers: data loader workers.
            prepare: written into `path` when it is missing: 'synth:worldmodel' or a `seqzoo data prepare` source.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, prepare=prepare)
        for name, value in (("image_size", image_size), ("action_dim", action_dim), ("seq_len", seq_len)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
        if stride is not None and stride < 1:
            raise ConfigError(f"data.stride must be a positive integer, got {stride!r}")
        if action_space not in ("one_hot", "box"):
            raise ConfigError(f"data.action_space must be 'one_hot' or 'box', got {action_space!r}")
        self.path, self.image_size, self.action_dim, self.seq_len = path, image_size, action_dim, seq_len
        self.stride = stride or seq_len
        self.action_space, self.action_low, self.action_high = action_space, action_low, action_high
        self.episodes: dict[str, list[Episode]] = {}
        self.datasets: dict[str, EpisodeWindows] = {}

    @property
    def dims(self) -> dict[str, int]:
        return {"image_size": self.image_size, "in_chans": 3, "action_dim": self.action_dim, "seq_len": self.seq_len}

    def data_ready(self) -> bool:
        return all((Path(self.path) / split).is_dir() for split in SPLITS)

    def prediction_table(self, predictions) -> pd.DataFrame:
        """One row per test window: its episode file and first step, and the imagination scores
        of the trained model on it (``WorldModelTask.predict_step``: per-pixel MSE of the imagined
        frames after the context, of the last ones, and reward accuracy, all and last)."""
        scores = torch.as_tensor(predictions).detach().double().cpu().numpy()
        ds = self.datasets["test"]
        if scores.shape != (len(ds.index), 4):
            raise ValueError(f"expected ({len(ds.index)}, 4) scores (one row per test window), got {scores.shape}")
        table = pd.DataFrame({"episode": [Path(ds.names[e]).name for e, _ in ds.index],
                              "start": [start for _, start in ds.index]})
        for k, name in enumerate(("imag_mse", "tail_mse", "reward_acc", "tail_reward_acc")):
            table[name] = scores[:, k]
        return table

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.require_data()
        root = Path(self.path)
        self._check_metadata(root)
        for split in SPLITS:
            files = episode_files(root / split)
            self.episodes[split] = [read_episode(f, image_size=self.image_size, action_dim=self.action_dim,
                                                 action_space=self.action_space, action_low=self.action_low,
                                                 action_high=self.action_high) for f in files]
            self.datasets[split] = EpisodeWindows(self.episodes[split], [str(f) for f in files], self.seq_len,
                                                  self.stride)

    def _check_metadata(self, root: Path) -> None:
        meta = read_metadata(root)
        for key, value in (("image_size", self.image_size), ("action_dim", self.action_dim),
                           ("action_space", self.action_space)):
            if key in meta and meta[key] != value:
                raise DataError(f"{root / 'dataset.json'}: {key} is {meta[key]!r} but the config says "
                                f"data.{key} = {value!r}")
