"""The memory-cue task: a colour cue shown in the first frames must be recalled much later.

Each episode has ``T = cue_len + gap + recall_len`` frames of ``image_size`` x ``image_size``
RGB pixels, with a 2x2 white agent that a random (sticky) policy moves with five one-hot
actions (stay, up, down, left, right; walls stop it):

* frames ``[0, cue_len)``: the background shows the cue, one of ``n_colours`` colours;
* frames ``[cue_len, cue_len + gap)``: a dark grey corridor (only the agent moves);
* frames ``[T - recall_len, T)``: the background shows the cue colour again, and the reward
  is 1 there when the cue is a *rewarding* colour (the first half of the palette), else 0.

The agent's motion is predictable from the actions alone; the recall frames and their
rewards are predictable only by remembering the cue across ``gap`` steps, so the task gets
harder as the gap grows, while a copy of the last context frame (a corridor frame) is
wrong on every recall pixel. Episodes are written in the public ``.npz`` format
(:mod:`seqzoo.datasets.worldmodel.reader`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_synth
from seqzoo.datasets.worldmodel.reader import Episode, write_episode
from seqzoo.errors import ConfigError

PALETTE = np.array([  # cue colours (RGB, 0..255); the first half of those used is rewarding
    (230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40),
    (200, 60, 220), (40, 210, 220), (250, 140, 30), (150, 150, 150),
], dtype=np.uint8)
CORRIDOR = np.array((30, 30, 30), dtype=np.uint8)
AGENT = np.array((255, 255, 255), dtype=np.uint8)
MOVES = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])  # stay, up, down, left, right (row, col)
N_ACTIONS = len(MOVES)


@register_synth("worldmodel")
def synth_worldmodel(
    out: str,
    n_train: int = 256,
    n_val: int = 32,
    n_test: int = 64,
    image_size: int = 16,
    gap: int = 52,
    cue_len: int = 4,
    recall_len: int = 8,
    n_colours: int = 4,
    stickiness: float = 0.8,
    seed: int = 0,
) -> Path:
    """Memory-cue episodes: a colour cue at the start must be re-rendered (and rewarded) after `gap` steps.

    Args:
        out: output folder (train/, val/, test/ of .npz episodes and dataset.json).
        n_train: training episodes.
        n_val: validation episodes.
        n_test: test episodes.
        image_size: frame height and width in pixels (>= 4).
        gap: corridor steps between the last cue frame and the first recall frame.
        cue_len: frames showing the cue at the start.
        recall_len: frames at the end that show the cue colour again (and carry the reward).
        n_colours: number of cue colours (2..8); the first half are rewarding.
        stickiness: probability that the random policy repeats its last action.
        seed: random seed.
    """
    if image_size < 4:
        raise ConfigError(f"image_size must be >= 4, got {image_size}")
    if not 2 <= n_colours <= len(PALETTE):
        raise ConfigError(f"n_colours must be in 2..{len(PALETTE)}, got {n_colours}")
    if gap < 0 or cue_len < 1 or recall_len < 1:
        raise ConfigError(f"need gap >= 0, cue_len >= 1, recall_len >= 1; got {gap}, {cue_len}, {recall_len}")
    if min(n_train, n_val, n_test) < 1:
        raise ConfigError("each split needs at least one episode")
    if not 0.0 <= stickiness < 1.0:
        raise ConfigError(f"stickiness must be in [0, 1), got {stickiness}")
    rng = np.random.default_rng(seed)
    length = cue_len + gap + recall_len
    with atomic_dir(out) as tmp:
        for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
            cues = np.arange(count) % n_colours
            rng.shuffle(cues)
            for i, cue in enumerate(cues):
                episode = memory_cue_episode(int(cue), length, image_size, cue_len, recall_len, n_colours,
                                             stickiness, rng)
                write_episode(tmp / split / f"{split}_{i:05d}.npz", episode)
        meta = {"source": "seqzoo synthetic memory-cue task", "image_size": image_size, "action_dim": N_ACTIONS,
                "action_space": "one_hot", "length": length, "gap": gap, "cue_len": cue_len,
                "recall_len": recall_len, "n_colours": n_colours, "seed": seed,
                "splits": {"train": n_train, "val": n_val, "test": n_test}}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def memory_cue_episode(cue: int, length: int, image_size: int, cue_len: int, recall_len: int, n_colours: int,
                       stickiness: float, rng: np.random.Generator) -> Episode:
    """One episode whose cue colour is ``PALETTE[cue]``."""
    image = np.empty((length, image_size, image_size, 3), dtype=np.uint8)
    actions = np.zeros((length, N_ACTIONS), dtype=np.float32)
    reward = np.zeros(length, dtype=np.float32)
    position = rng.integers(0, image_size - 1, size=2)
    action = int(rng.integers(N_ACTIONS))
    recall_start = length - recall_len
    for t in range(length):
        shows_cue = t < cue_len or t >= recall_start
        image[t] = PALETTE[cue] if shows_cue else CORRIDOR
        image[t, position[0]:position[0] + 2, position[1]:position[1] + 2] = AGENT
        if t >= recall_start and cue < n_colours // 2:
            reward[t] = 1.0
        if rng.random() >= stickiness:
            action = int(rng.integers(N_ACTIONS))
        actions[t, action] = 1.0
        position = np.clip(position + MOVES[action], 0, image_size - 2)
    is_first = np.zeros(length, dtype=bool)
    is_first[0] = True
    return Episode(image=image, action=actions, reward=reward, is_first=is_first)


def cue_of(frame: np.ndarray, n_colours: int = len(PALETTE)) -> int:
    """The palette index nearest to a frame's median background colour (H, W, 3) uint8."""
    background = np.median(frame.reshape(-1, 3).astype(np.float64), axis=0)
    distances = ((PALETTE[:n_colours].astype(np.float64) - background) ** 2).sum(axis=1)
    return int(np.argmin(distances))
