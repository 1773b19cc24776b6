"""Separation data: WSJ0-2mix and Libri2Mix readers, clear errors, generators."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqzoo import DataError

sf = pytest.importorskip("soundfile", reason="the separation data needs soundfile (pip install 'seqzoo[audio]')")

from seqzoo.datasets.separation import (  # noqa: E402
    SPEECH_GROUPS,
    SeparationDataModule,
    collate_mixtures,
    index_libri_mix,
    index_wsj0_mix,
    prepare_speech_mix,
    read_audio,
    synth_separation,
)

HAVE_SPEECH = all(Path(p).exists() for paths in SPEECH_GROUPS.values() for p in paths)


def _tone(n, freq, rate=8000):
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def write_wsj0(root: Path, split="tt", lengths=(800, 1200), rate=8000) -> Path:
    for i, n in enumerate(lengths):
        s1, s2 = _tone(n, 200, rate), _tone(n, 330, rate)
        for folder, audio in (("mix", s1 + s2), ("s1", s1), ("s2", s2)):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            sf.write(root / split / folder / f"utt{i}.wav", audio, rate)
    return root


def test_wsj0_reader_indexes_a_split_and_reads_padded_batches(tmp_path):
    root = write_wsj0(tmp_path)
    records = index_wsj0_mix(root, "tt")
    assert [r.mixture_id for r in records] == ["utt0", "utt1"]
    assert [r.frames for r in records] == [800, 1200] and records[0].sources[1].parent.name == "s2"
    for split in ("tr", "cv"):
        write_wsj0(root, split, lengths=(1600, 2000, 2400))
    dm = SeparationDataModule(str(root), segment=0.1, batch_size=2, eval_batch_size=2)
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["mix"].shape == (2, 800) and train["sources"].shape == (2, 2, 800)  # random 0.1 s crops
    dm.setup("test")
    test = next(iter(dm.test_dataloader()))
    assert test["lengths"].tolist() == [800, 1200] and test["mix"].shape == (2, 1200)
    assert torch.all(test["mix"][0, 800:] == 0), "padding is zeros"
    torch.testing.assert_close(test["mix"][1], test["sources"][1].sum(0), atol=2e-4, rtol=0)


def test_wsj0_reader_errors_name_the_file(tmp_path):
    root = write_wsj0(tmp_path / "a")
    (root / "tt" / "s2" / "utt1.wav").unlink()
    with pytest.raises(DataError, match=r"s2: file names differ .*missing utt1.wav"):
        index_wsj0_mix(root, "tt")

    root = write_wsj0(tmp_path / "b")
    shutil.rmtree(root / "tt" / "s1")
    with pytest.raises(DataError, match="WSJ0-2mix folder 's1' not found"):
        index_wsj0_mix(root, "tt")

    root = write_wsj0(tmp_path / "c")
    sf.write(root / "tt" / "s1" / "utt0.wav", np.zeros((800, 2), np.float32), 8000)
    with pytest.raises(DataError, match=r"utt0.wav: expected a mono file, found 2 channels"):
        index_wsj0_mix(root, "tt")

    root = write_wsj0(tmp_path / "d")
    sf.write(root / "tt" / "s2" / "utt0.wav", _tone(700, 300), 8000)
    with pytest.raises(DataError, match=r"differ in length .*s2/utt0.wav 700"):
        index_wsj0_mix(root, "tt")

    root = write_wsj0(tmp_path / "e")
    sf.write(root / "tt" / "s1" / "utt1.wav", _tone(2400, 200, 16000), 16000)
    with pytest.raises(DataError, match="different sample rates"):
        index_wsj0_mix(root, "tt")

    root = write_wsj0(tmp_path / "f")
    (root / "tt" / "mix" / "utt0.wav").write_bytes(b"not audio")
    with pytest.raises(DataError, match="utt0.wav: cannot be read as audio"):
        index_wsj0_mix(root, "tt")

    with pytest.raises(DataError, match="separation data not found: .*missing -- put WSJ0-2mix.*"
                                        "seqzoo data prepare speech-mix"):
        SeparationDataModule(str(tmp_path / "missing")).setup("test")


def test_other_rates_are_resampled(tmp_path):
    path = tmp_path / "x.wav"
    sf.write(path, _tone(16000, 440, 16000), 16000)
    audio = read_audio(path, 8000)
    assert audio.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 8000 / len(audio) - 440) < 2, "the tone keeps its frequency"


def write_libri(root: Path, lengths=(900, 1000), length_column=None) -> Path:
    rows = []
    for i, n in enumerate(lengths):
        paths = []
        for folder, audio in (("mix_clean", _tone(n, 200) + _tone(n, 500)), ("s1", _tone(n, 200)),
                              ("s2", _tone(n, 500))):
            (root / "test" / folder).mkdir(parents=True, exist_ok=True)
            sf.write(root / "test" / folder / f"m{i}.wav", audio, 8000)
            paths.append(f"test/{folder}/m{i}.wav")
        rows.append({"mixture_ID": f"m{i}", "mixture_path": paths[0], "source_1_path": paths[1],
                     "source_2_path": str(root / paths[2]), "length": length_column or n})
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / "metadata" / "mixture_test_mix_clean.csv", index=False)
    return root / "metadata" / "mixture_test_mix_clean.csv"


def test_libri2mix_reader_relative_and_absolute_paths(tmp_path):
    csv = write_libri(tmp_path)
    records = index_libri_mix(csv)
    assert [(r.mixture_id, r.frames) for r in records] == [("m0", 900), ("m1", 1000)]
    dm = SeparationDataModule(str(tmp_path), layout="libri2mix")
    dm.setup("test")
    assert next(iter(dm.test_dataloader()))["sources"].shape == (1, 2, 900)


def test_libri2mix_reader_errors(tmp_path):
    csv = write_libri(tmp_path / "a", length_column=950)
    with pytest.raises(DataError, match=r"line 2: column 'length' says 950 samples, the files have 900"):
        index_libri_mix(csv)
    csv = write_libri(tmp_path / "b")
    pd.read_csv(csv).drop(columns=["source_2_path"]).to_csv(csv, index=False)
    with pytest.raises(DataError, match="missing column.*'source_2_path'"):
        index_libri_mix(csv)
    csv = write_libri(tmp_path / "c")
    (tmp_path / "c" / "test" / "s1" / "m1.wav").unlink()
    with pytest.raises(DataError, match=r"line 3, column 'source_1_path': file not found"):
        index_libri_mix(csv)


def test_collate_pads_and_keeps_lengths():
    items = [{"mix": torch.ones(3), "sources": torch.ones(2, 3)}, {"mix": torch.ones(5), "sources": torch.ones(2, 5)}]
    batch = collate_mixtures(items)
    assert batch["mix"].shape == (2, 5) and batch["lengths"].tolist() == [3, 5]
    assert batch["sources"][0, :, 3:].abs().sum() == 0


def _manifest_speakers(root: Path, split: str) -> set[str]:
    speakers = set()
    for line in (root / f"mix_2_spk_{split}.txt").read_text().splitlines():
        _, a, _, b, _ = line.split()
        speakers |= {a.split("/")[0], b.split("/")[0]}
    return speakers


def test_synthetic_generator_writes_the_layout_with_unseen_test_speakers(tmp_path):
    root = synth_separation(str(tmp_path / "syn"), n_train=8, n_val=2, n_test=3, seconds=0.5)
    counts = {split: len(index_wsj0_mix(root, split)) for split in ("tr", "cv", "tt")}
    assert counts == {"tr": 8, "cv": 2, "tt": 3}
    assert not _manifest_speakers(root, "tt") & (_manifest_speakers(root, "tr") | _manifest_speakers(root, "cv"))
    mix, s1, s2 = (read_audio(root / "tt" / d / sorted((root / "tt" / "mix").iterdir())[0].name)
                   for d in ("mix", "s1", "s2"))
    np.testing.assert_allclose(mix, s1 + s2, atol=2e-4)  # 16-bit PCM rounding
    assert np.abs(mix).max() <= 0.91


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SPEECH, reason="needs Debian's speech recordings: apt-get install "
                    "pocketsphinx-testdata alsa-utils (make install does it where apt is available)")
def test_speech_mix_from_debian_packages_is_speaker_disjoint(tmp_path):
    root = prepare_speech_mix(str(tmp_path / "sm"), n_train=6, n_val=2, espeak=False)
    tt = index_wsj0_mix(root, "tt")
    assert len(tt) == 40, "every alsa x cards pair of whole utterances"
    assert _manifest_speakers(root, "tt") == {"alsa", "cards"}
    assert not _manifest_speakers(root, "tt") & _manifest_speakers(root, "tr")
    assert {r.sample_rate for r in tt} == {8000}
    assert "pocketsphinx-testdata" in (root / "README.txt").read_text()
