"""World-model data (S4WM): ``.npz`` episodes, the memory-cue generator, MiniGrid collection."""

from seqzoo.datasets.worldmodel.datamodule import EpisodeWindows, WorldModelDataModule
from seqzoo.datasets.worldmodel.prepare import prepare_minigrid_memory
from seqzoo.datasets.worldmodel.reader import (
    EPISODE_KEYS,
    Episode,
    episode_files,
    read_episode,
    read_metadata,
    write_episode,
)
from seqzoo.datasets.worldmodel.synthetic import PALETTE, cue_of, memory_cue_episode, synth_worldmodel

__all__ = [
    "EPISODE_KEYS",
    "PALETTE",
    "Episode",
    "EpisodeWindows",
    "WorldModelDataModule",
    "cue_of",
    "episode_files",
    "memory_cue_episode",
    "prepare_minigrid_memory",
    "read_episode",
    "read_metadata",
    "synth_worldmodel",
    "write_episode",
]
