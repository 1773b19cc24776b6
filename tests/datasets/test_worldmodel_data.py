"""World-model episodes: the reader's errors name file and key; the memory cue is recoverable;
windows, dims and the MiniGrid collector."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seqzoo.datasets.worldmodel import (
    PALETTE,
    Episode,
    WorldModelDataModule,
    cue_of,
    read_episode,
    synth_worldmodel,
    write_episode,
)
from seqzoo.datasets.worldmodel.synthetic import CORRIDOR
from seqzoo.errors import DataError


def _episode(steps: int = 6, size: int = 8, actions: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    action = np.eye(actions, dtype=np.float32)[rng.integers(actions, size=steps)]
    is_first = np.zeros(steps, dtype=bool)
    is_first[0] = True
    return {"image": rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8), "action": action,
            "reward": np.zeros(steps, dtype=np.float32), "is_first": is_first}


def _write(tmp_path, **arrays) -> str:
    path = tmp_path / "ep.npz"
    np.savez(path, **arrays)
    return str(path)


def test_a_valid_episode_round_trips(tmp_path):
    arrays = _episode()
    write_episode(tmp_path / "e.npz", Episode(**arrays))
    episode = read_episode(tmp_path / "e.npz", image_size=8, action_dim=3)
    assert len(episode) == 6 and episode.image.dtype == np.uint8
    np.testing.assert_array_equal(episode.image, arrays["image"])


@pytest.mark.parametrize("change, key, words", [
    (lambda a: a.pop("reward"), "reward", "missing key"),
    (lambda a: a.update(action=a["action"][:-1]), "action", "5 steps but 'image' has 6"),
    (lambda a: a.update(is_first=a["is_first"][:4]), "is_first", "4 steps"),
    (lambda a: a.update(image=a["image"].astype(np.float32)), "image", "uint8"),
    (lambda a: a.update(image=a["image"][:, :, :6]), "image", "square"),
    (lambda a: a.update(image=np.zeros((6, 16, 16, 3), np.uint8)), "image", "expected 8x8"),
    (lambda a: a["action"].__setitem__((2, 0), 0.5), "action", "step 2"),
    (lambda a: a.update(action=np.ones((6, 3), np.float32)), "action", "outside the action space"),
    (lambda a: a.update(action=np.ones((6, 4), np.float32) / 4), "action", "width 4, expected 3"),
    (lambda a: a["reward"].__setitem__(3, np.nan), "reward", "step 3"),
    (lambda a: a["is_first"].__setitem__(0, False), "is_first", "True at step 0"),
])
def test_bad_episodes_name_the_file_and_key(tmp_path, change, key, words):
    arrays = _episode()
    change(arrays)
    path = _write(tmp_path, **arrays)
    with pytest.raises(DataError) as err:
        read_episode(path, image_size=8, action_dim=3)
    message = str(err.value)
    assert path in message and repr(key) in message and words in message, message


def test_box_actions_are_checked_against_their_bounds(tmp_path):
    arrays = _episode()
    arrays["action"] = np.full((6, 2), 0.5, np.float32)
    arrays["action"][4, 1] = 1.5
    path = _write(tmp_path, **arrays)
    assert len(read_episode(path, action_space="box", action_low=-2, action_high=2)) == 6
    with pytest.raises(DataError, match=r"'action', step 4: .* outside the action space \[-1.0, 1.0\]"):
        read_episode(path, action_space="box")


def test_a_missing_or_corrupt_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_episode(tmp_path / "none.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        read_episode(tmp_path / "bad.npz")


def test_the_memory_cue_is_recoverable_and_its_reward_follows_it(tmp_path):
    root = synth_worldmodel(str(tmp_path / "cue"), n_train=8, n_val=1, n_test=1, image_size=8, gap=9, cue_len=2,
                            recall_len=3, n_colours=4, seed=3)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["length"] == 14 and meta["action_dim"] == 5
    cues = []
    for path in sorted((root / "train").glob("*.npz")):
        episode = read_episode(path, image_size=8, action_dim=5)
        cue = cue_of(episode.image[0], 4)
        cues.append(cue)
        assert all(cue_of(frame, 4) == cue for frame in episode.image[:2])
        assert all(cue_of(frame, 4) == cue for frame in episode.image[-3:]), "recall frames re-render the cue"
        corridor = episode.image[2:-3].reshape(-1, 3)
        assert (corridor == CORRIDOR).all(axis=1).mean() > 0.9, "no trace of the cue during the gap"
        assert (episode.reward[-3:] == float(cue < 2)).all() and not episode.reward[:-3].any()
    assert sorted(set(cues)) == [0, 1, 2, 3], "every colour appears"
    assert (PALETTE[:4] != CORRIDOR).any(axis=1).all()


def test_windows_strides_and_dims_from_init_arguments(tmp_path):
    missing = WorldModelDataModule(str(tmp_path / "absent"), image_size=8, action_dim=5, seq_len=7)
    assert missing.dims == {"image_size": 8, "in_chans": 3, "action_dim": 5, "seq_len": 7}
    assert not (tmp_path / "absent").exists(), "dims read nothing and wrote nothing"
    root = synth_worldmodel(str(tmp_path / "cue"), n_train=2, n_val=1, n_test=1, image_size=8, gap=7, cue_len=1,
                            recall_len=2)
    dm = WorldModelDataModule(str(root), image_size=8, action_dim=5, seq_len=4, stride=3, batch_size=2)
    dm.setup()
    assert len(dm.datasets["train"]) == 2 * 3  # starts 0, 3, 6 of 10 steps
    item = dm.datasets["train"][1]
    assert item["image"].shape == (4, 8, 8, 3) and bool(item["is_first"][0])
    too_long = WorldModelDataModule(str(root), image_size=8, action_dim=5, seq_len=11)
    with pytest.raises(DataError, match="shorter than data.seq_len = 11"):
        too_long.setup()
    wrong = WorldModelDataModule(str(root), image_size=16, action_dim=5, seq_len=4)
    with pytest.raises(DataError, match="dataset.json: image_size is 8"):
        wrong.setup()


def test_minigrid_memory_episodes_are_collected_in_the_public_format(tmp_path):
    pytest.importorskip("gymnasium")
    pytest.importorskip("minigrid")
    from seqzoo.datasets.worldmodel import prepare_minigrid_memory

    root = prepare_minigrid_memory(str(tmp_path / "mg"), n_train=1, n_val=1, n_test=1, steps_per_file=40,
                                   image_size=16, seed=0)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["action_dim"] == 3 and meta["image_size"] == 16
    episode = read_episode(root / "train" / "train_00000.npz", image_size=16, action_dim=3)
    assert len(episode) == 40 and episode.is_first[0]
    assert episode.image.std() > 0, "frames are rendered, not blank"
    assert episode.is_first[1:].any(), "environment resets inside a file are marked"
    rewarded = np.flatnonzero(episode.reward > 0)
    assert len(rewarded), "the scripted policy reaches the objects"
    ends = np.append(episode.is_first[1:], True)
    assert ends[rewarded].all(), "a success reward sits on the terminal frame, before the reset"
