"""The world-model episode format: one ``.npz`` file per episode.

Layout (the format Dreamer-style replay buffers use, one file per episode)::

    root/
      dataset.json            optional: {"image_size", "action_dim", "action_space", ...}
      train/<name>.npz        one episode per file
      val/<name>.npz
      test/<name>.npz

Each ``.npz`` holds, for T steps:

* ``image``    (T, H, W, 3) uint8 -- the observation x_t (RGB, H == W);
* ``action``   (T, A) float -- the action a_t taken *after* observing x_t (it leads to
  x_{t+1}); one-hot rows for a discrete space, values in [low, high] for a box;
* ``reward``   (T,) float -- the reward r_t received together with x_t (r_0 = 0);
* ``is_first`` (T,) bool -- True where an environment episode starts (always at t = 0;
  a file may hold several environment episodes back to back).

:func:`read_episode` checks every key and names the file and the key (and the step)
in a :class:`~seqzoo.errors.DataError`; nothing is silently cut or converted.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from seqzoo.errors import ConfigError, DataError

EPISODE_KEYS = ("image", "action", "reward", "is_first")
SPLITS = ("train", "val", "test")
ActionSpace = Literal["one_hot", "box"]


@dataclass
class Episode:
    """One episode's arrays (see the module docstring for their meaning)."""

    image: np.ndarray  # (T, H, W, 3) uint8
    action: np.ndarray  # (T, A) float32
    reward: np.ndarray  # (T,) float32
    is_first: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.image)


def read_episode(
    path: str | os.PathLike,
    *,
    image_size: int | None = None,
    action_dim: int | None = None,
    action_space: ActionSpace = "one_hot",
    action_low: float = -1.0,
    action_high: float = 1.0,
) -> Episode:
    """Read and check one episode file.

    Args:
        path: the ``.npz`` file.
        image_size: expected frame height and width (None: any square size).
        action_dim: expected action width A (None: any).
        action_space: ``one_hot`` (each row one-hot: a discrete action) or ``box``.
        action_low: lower bound of a box action space.
        action_high: upper bound of a box action space.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"episode file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = list(npz.files)
            missing = [k for k in EPISODE_KEYS if k not in found]
            if missing:
                raise DataError(f"{path}: missing key(s) {', '.join(map(repr, missing))}; found: {', '.join(found) or 'none'}")
            arrays = {k: npz[k] for k in EPISODE_KEYS}
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read as an .npz episode: {err}") from None
    except ValueError as err:  # object arrays need pickle: refused
        raise DataError(f"{path}: cannot be read as an .npz episode (plain numeric arrays only): {err}") from None

    image = arrays["image"]
    if image.ndim != 4 or image.shape[-1] != 3:
        raise DataError(f"{path}: key 'image' must be (T, H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise DataError(f"{path}: key 'image' must be uint8 pixels (0..255), got {image.dtype}")
    if image.shape[1] != image.shape[2]:
        raise DataError(f"{path}: key 'image' frames must be square, got {image.shape[1]}x{image.shape[2]}")
    if image_size is not None and image.shape[1] != image_size:
        raise DataError(f"{path}: key 'image' frames are {image.shape[1]}x{image.shape[2]}, expected "
                        f"{image_size}x{image_size} (data.image_size)")
    steps = len(image)
    if steps < 1:
        raise DataError(f"{path}: key 'image' holds no steps")

    action = arrays["action"]
    if action.ndim != 2:
        raise DataError(f"{path}: key 'action' must be (T, A), got shape {action.shape}")
    reward, is_first = arrays["reward"], arrays["is_first"]
    for key, value in (("action", action), ("reward", reward), ("is_first", is_first)):
        if len(value) != steps:
            raise DataError(f"{path}: key {key!r} has {len(value)} steps but 'image' has {steps}")
    if action_dim is not None and action.shape[1] != action_dim:
        raise DataError(f"{path}: key 'action' has width {action.shape[1]}, expected {action_dim} (data.action_dim)")
    if action.dtype.kind not in "biuf":
        raise DataError(f"{path}: key 'action' must be numeric, got {action.dtype}")
    action = action.astype(np.float32)
    _check_actions(path, action, action_space, action_low, action_high)

    if reward.ndim != 1 or reward.dtype.kind not in "biuf":
        raise DataError(f"{path}: key 'reward' must be a numeric (T,) array, got {reward.dtype} {reward.shape}")
    bad = ~np.isfinite(reward.astype(np.float64))
    if bad.any():
        raise DataError(f"{path}: key 'reward', step {int(np.argmax(bad))}: non-finite value {reward[bad][0]!r}")
    if is_first.ndim != 1 or is_first.dtype.kind not in "biu" or not np.isin(is_first, (0, 1)).all():
        raise DataError(f"{path}: key 'is_first' must be a (T,) bool array, got {is_first.dtype} {is_first.shape}")
    is_first = is_first.astype(bool)
    if not is_first[0]:
        raise DataError(f"{path}: key 'is_first' must be True at step 0 (an episode file starts an episode)")
    return Episode(image=image, action=action, reward=reward.astype(np.float32), is_first=is_first)


def _check_actions(path: Path, action: np.ndarray, space: str, low: float, high: float) -> None:
    finite = np.isfinite(action).all(axis=1)
    if not finite.all():
        t = int(np.argmin(finite))
        raise DataError(f"{path}: key 'action', step {t}: non-finite value {action[t].tolist()}")
    if space == "one_hot":
        ok = np.isin(action, (0.0, 1.0)).all(axis=1) & (action.sum(axis=1) == 1.0)
        if not ok.all():
            t = int(np.argmin(ok))
            raise DataError(f"{path}: key 'action', step {t}: {action[t].tolist()} is outside the action space "
                            f"(one-hot rows of width {action.shape[1]})")
    elif space == "box":
        ok = ((action >= low) & (action <= high)).all(axis=1)
        if not ok.all():
            t = int(np.argmin(ok))
            raise DataError(f"{path}: key 'action', step {t}: {action[t].tolist()} is outside the action space "
                            f"[{low}, {high}]")
    else:
        raise ConfigError(f"action_space must be 'one_hot' or 'box', got {space!r}")


def write_episode(path: str | os.PathLike, episode: Episode) -> Path:
    """Write one episode as a compressed ``.npz`` (keys as in the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, image=np.asarray(episode.image, dtype=np.uint8),
                        action=np.asarray(episode.action, dtype=np.float32),
                        reward=np.asarray(episode.reward, dtype=np.float32),
                        is_first=np.asarray(episode.is_first, dtype=bool))
    return path


def episode_files(folder: str | os.PathLike) -> list[Path]:
    """The sorted ``.npz`` files of one split folder; none is an error naming the folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"episode folder not found: {folder} (expected <root>/{{{','.join(SPLITS)}}}/<episode>.npz)")
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise DataError(f"{folder}: no .npz episode files")
    return files


def read_metadata(root: str | os.PathLike) -> dict:
    """``root/dataset.json`` as a dict ({} when the file is absent)."""
    meta = Path(root) / "dataset.json"
    if not meta.is_file():
        return {}
    try:
        value = json.loads(meta.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{meta}: not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise DataError(f"{meta}: expected a JSON object")
    return value
