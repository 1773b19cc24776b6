"""Episodes collected from MiniGrid memory rooms (gymnasium + minigrid, extra ``rl``).

``seqzoo data prepare minigrid-memory --out DIR`` runs ``MiniGrid-MemoryS7-v0`` (or another
memory room) and writes fixed-length ``.npz`` episode files in the public format
(:mod:`seqzoo.datasets.worldmodel.reader`). Observations are the agent's egocentric RGB
view (``RGBImgPartialObsWrapper``, 7x7 tiles), resized to ``image_size`` (64 by default):
the room's cue object is seen at the start and must be remembered at the end of the
corridor, where the agent picks one of two objects. Actions are one-hot over MiniGrid's
three movement actions (turn left, turn right, forward). Rewards are MiniGrid's
(1 - 0.9 step/max_steps on success, 0 otherwise).

Environment episodes end at success, failure or the step limit; a file holds
``steps_per_file`` steps. The terminal frame is kept with its reward, and the environment
is reset on the next step (``is_first`` marks it), as in Dreamer's replay chunks.

Policies: ``random`` (uniform actions), or ``scripted`` (breadth-first-search paths to one
of the two objects, chosen at random, with ``epsilon`` random actions), which walks the
corridor and so exercises the memory.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_prepare
from seqzoo.datasets.worldmodel.reader import Episode, write_episode
from seqzoo.errors import ConfigError, DataError

MOVEMENT_ACTIONS = ("left", "right", "forward")  # MiniGrid Actions 0, 1, 2
DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid agent_dir 0..3 as (dx, dy)


@register_prepare("minigrid-memory")
def prepare_minigrid_memory(
    out: str,
    env_id: str = "MiniGrid-MemoryS7-v0",
    n_train: int = 48,
    n_val: int = 8,
    n_test: int = 16,
    steps_per_file: int = 128,
    image_size: int = 64,
    policy: str = "scripted",
    epsilon: float = 0.1,
    seed: int = 0,
) -> Path:
    """MiniGrid memory-room episodes (agent's RGB view, one-hot actions) from a scripted or random policy.

    Args:
        out: output folder (train/, val/, test/ of .npz episodes and dataset.json).
        env_id: a gymnasium id of a MiniGrid environment (memory rooms: MiniGrid-MemoryS7-v0 ...).
        n_train: training files.
        n_val: validation files.
        n_test: test files.
        steps_per_file: steps per file (environment resets inside a file are marked by is_first).
        image_size: frame height and width after resizing the egocentric view.
        policy: 'scripted' (walks to an object by BFS) or 'random'.
        epsilon: probability of a random action under the scripted policy.
        seed: random seed (environment layouts and the policy).
    """
    try:
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the MiniGrid environments)
        from minigrid.wrappers import RGBImgPartialObsWrapper
    except ImportError:
        raise DataError("minigrid-memory needs gymnasium and minigrid: pip install 'seqzoo[rl]'") from None
    if policy not in ("scripted", "random"):
        raise ConfigError(f"policy must be 'scripted' or 'random', got {policy!r}")
    if steps_per_file < 2 or image_size < 8 or min(n_train, n_val, n_test) < 1:
        raise ConfigError("need steps_per_file >= 2, image_size >= 8 and at least one file per split")
    try:
        env = RGBImgPartialObsWrapper(gym.make(env_id))
    except gym.error.Error as err:
        raise ConfigError(f"cannot make environment {env_id!r}: {err}") from None
    rng = np.random.default_rng(seed)
    collector = _Collector(env, rng, policy, epsilon, image_size, seed)
    with atomic_dir(out) as tmp:
        for split, count in (("train", n_train), ("val", n_val), ("test", n_test)):
            for i in range(count):
                write_episode(tmp / split / f"{split}_{i:05d}.npz", collector.collect(steps_per_file))
        meta = {"source": f"gymnasium {env_id}, RGBImgPartialObsWrapper, {policy} policy", "env_id": env_id,
                "image_size": image_size, "action_dim": len(MOVEMENT_ACTIONS), "action_space": "one_hot",
                "actions": list(MOVEMENT_ACTIONS), "length": steps_per_file, "policy": policy,
                "epsilon": epsilon, "seed": seed, "splits": {"train": n_train, "val": n_val, "test": n_test},
                "env_episodes": collector.episodes, "env_successes": collector.successes}
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    env.close()
    return Path(out)


class _Collector:
    def __init__(self, env, rng: np.random.Generator, policy: str, epsilon: float, image_size: int, seed: int) -> None:
        self.env, self.rng, self.policy, self.epsilon, self.image_size = env, rng, policy, epsilon, image_size
        self.seed = seed
        self.episodes = self.successes = 0
        self.obs, self._done, self._after_terminal, self._reward = None, False, False, 0.0

    def collect(self, steps: int) -> Episode:
        image = np.empty((steps, self.image_size, self.image_size, 3), dtype=np.uint8)
        action = np.zeros((steps, len(MOVEMENT_ACTIONS)), dtype=np.float32)
        reward = np.zeros(steps, dtype=np.float32)
        is_first = np.zeros(steps, dtype=bool)
        for t in range(steps):
            if self.obs is None or self._after_terminal:  # the step after a terminal frame starts anew
                self._reset()
                is_first[t] = True
            is_first[0] = True  # a file starts a chunk (mid-episode when it continues the last file)
            image[t] = _resize(self.obs["image"], self.image_size)
            reward[t] = self._reward
            a = self._act()
            action[t, a] = 1.0
            if self._done:  # a terminal frame is recorded with its reward; its action goes nowhere
                self._after_terminal = True
                continue
            self.obs, step_reward, terminated, truncated, _ = self.env.step(a)
            self._reward, self._done = float(step_reward), bool(terminated or truncated)
            self.successes += int(self._done and step_reward > 0)
        return Episode(image=image, action=action, reward=reward, is_first=is_first)

    def _reset(self) -> None:
        self.obs, _ = self.env.reset(seed=int(self.rng.integers(2**31 - 1)))
        self._done, self._after_terminal, self._reward = False, False, 0.0
        self.episodes += 1
        self._target = None

    def _act(self) -> int:
        if self.policy == "random" or self.rng.random() < self.epsilon:
            return int(self.rng.integers(len(MOVEMENT_ACTIONS)))
        env = self.env.unwrapped
        if self._target is None:
            goals = [tuple(env.success_pos), tuple(env.failure_pos)]
            self._target = goals[int(self.rng.integers(2))]
        return _bfs_action(env, self._target)


def _bfs_action(env, target: tuple[int, int]) -> int:
    """The movement action on a shortest path to a cell next to ``target`` (then face it, step on it)."""
    start, direction = tuple(int(v) for v in env.agent_pos), int(env.agent_dir)
    width, height = env.grid.width, env.grid.height

    def free(cell) -> bool:
        x, y = cell
        if not (0 <= x < width and 0 <= y < height):
            return False
        if cell == target:
            return True
        obj = env.grid.get(x, y)
        return obj is None or obj.can_overlap()

    previous = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == target:
            break
        for dx, dy in DIRECTIONS:
            nxt = (cell[0] + dx, cell[1] + dy)
            if nxt not in previous and free(nxt):
                previous[nxt] = cell
                queue.append(nxt)
    if target not in previous or target == start:
        return 2
    cell = target
    while previous[cell] != start:
        cell = previous[cell]
    want = DIRECTIONS.index((cell[0] - start[0], cell[1] - start[1]))
    if want == direction:
        return 2  # forward
    return 1 if (want - direction) % 4 == 1 else 0  # turn right, else left


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    if frame.shape[:2] == (size, size):
        return frame.astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(frame.astype(np.uint8)).resize((size, size), Image.BILINEAR), dtype=np.uint8)
