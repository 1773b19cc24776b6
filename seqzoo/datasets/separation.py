"""Two-speaker mixtures for monaural speech separation (WSJ0-2mix, Libri2Mix).

Readers accept the public layouts as the user has them on disk:

* WSJ0-2mix: ``<root>/{tr,cv,tt}/{mix,s1,s2}/<id>.wav`` -- the same file names in every
  folder, one mono file each, ``mix`` the sum of the sources (train / validation / test);
* Libri2Mix: ``<root>/metadata/mixture_<split>_mix_clean.csv`` with columns
  ``mixture_ID, mixture_path, source_1_path, source_2_path, length`` (paths absolute or
  relative to ``<root>``; ``length`` in samples).

Audio goes through soundfile; files at another rate than ``sample_rate`` are resampled
(soxr, or scipy's polyphase filter). Headers are checked when a split is indexed: a
missing partner file, a stereo file, rates or lengths that differ within a mixture are
a :class:`~seqzoo.errors.DataError` naming the file. Training items are random crops of
``segment`` seconds; validation and test items are whole utterances, padded per batch
with their lengths (the task evaluates each on its own samples).

Data written here, in the WSJ0-2mix layout at 8 kHz:

* ``seqzoo data prepare speech-mix``: real speech from Debian's ``pocketsphinx-testdata``
  and ``alsa-utils`` (plus ``espeak-ng`` voices for training), speaker-disjoint test;
* ``seqzoo data synth separation``: purely synthetic voiced "speech" (harmonic sources
  with moving formants and syllable envelopes), speaker-disjoint splits.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from seqzoo.datasets.base import (
    BaseDataModule,
    atomic_dir,
    materialise,
    read_csv_checked,
    register_prepare,
    register_synth,
    require_path,
)
from seqzoo.errors import ConfigError, DataError

WSJ0_SPLITS = {"train": "tr", "val": "cv", "test": "tt"}
LIBRI_SPLITS = {"train": "train-100", "val": "dev", "test": "test"}
LIBRI_COLUMNS = ("mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length")


# ---------------------------------------------------------------------------------------
# index of a split: one record per mixture, headers checked
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixtureRecord:
    """One mixture: its id, the mixture file, the source files, its length and rate on disk."""

    mixture_id: str
    mixture: Path
    sources: tuple[Path, ...]
    frames: int
    sample_rate: int


def index_wsj0_mix(root: str | os.PathLike, split: str, n_sources: int = 2) -> list[MixtureRecord]:
    """Records of ``<root>/<split>/{mix,s1..sN}/*.wav``; every folder must hold the same names."""
    split_dir = require_path(Path(root) / split, f"WSJ0-2mix split folder {split!r}",
                             hint="expected <root>/{tr,cv,tt}/{mix,s1,s2}/<id>.wav")
    folders = ["mix"] + [f"s{k}" for k in range(1, n_sources + 1)]
    names: dict[str, set[str]] = {}
    for folder in folders:
        d = require_path(split_dir / folder, f"WSJ0-2mix folder {folder!r}",
                         hint=f"a mixture split needs the folders {', '.join(folders)}")
        names[folder] = {p.name for p in d.glob("*.wav")}
    mix_names = names["mix"]
    if not mix_names:
        raise DataError(f"{split_dir / 'mix'}: no .wav files")
    for folder in folders[1:]:
        missing, extra = sorted(mix_names - names[folder]), sorted(names[folder] - mix_names)
        if missing or extra:
            what = (f"missing {_few(missing)}" if missing else "") + ("; " if missing and extra else "") + (
                f"files without a mixture: {_few(extra)}" if extra else "")
            raise DataError(f"{split_dir / folder}: file names differ from {split_dir / 'mix'}: {what}")
    records = []
    for name in sorted(mix_names):
        files = [split_dir / folder / name for folder in folders]
        frames, rate = _check_headers(files)
        records.append(MixtureRecord(Path(name).stem, files[0], tuple(files[1:]), frames, rate))
    return records


def index_libri_mix(csv_path: str | os.PathLike, root: str | os.PathLike | None = None,
                    n_sources: int = 2) -> list[MixtureRecord]:
    """Records of a Libri2Mix metadata CSV; relative paths are taken from ``root``
    (default: the folder above ``metadata/``)."""
    csv_path = Path(csv_path)
    columns = ("mixture_ID", "mixture_path", *(f"source_{k}_path" for k in range(1, n_sources + 1)), "length")
    frame = read_csv_checked(csv_path, required=columns, numeric=("length",), what="Libri2Mix metadata CSV")
    base = Path(root) if root is not None else csv_path.parent.parent
    records = []
    for i, row in enumerate(frame.itertuples(index=False)):
        row = row._asdict()
        line = f"{csv_path}, line {i + 2}"
        files = []
        for col in columns[1:-1]:
            p = Path(str(row[col]))
            p = p if p.is_absolute() else base / p
            if not p.exists():
                raise DataError(f"{line}, column {col!r}: file not found: {p}")
            files.append(p)
        frames, rate = _check_headers(files)
        if int(row["length"]) != frames:
            raise DataError(f"{line}: column 'length' says {int(row['length'])} samples, the files have {frames}")
        records.append(MixtureRecord(str(row["mixture_ID"]), files[0], tuple(files[1:]), frames, rate))
    return records


def _check_headers(files: Sequence[Path]) -> tuple[int, int]:
    """(frames, rate) shared by a mixture's files; mono, same rate, same length, or a DataError."""
    import soundfile as sf

    infos = []
    for f in files:
        try:
            info = sf.info(str(f))
        except RuntimeError as err:
            raise DataError(f"{f}: cannot be read as audio: {err}") from None
        if info.channels != 1:
            raise DataError(f"{f}: expected a mono file, found {info.channels} channels")
        infos.append(info)
    rates = {i.samplerate for i in infos}
    if len(rates) > 1:
        raise DataError(f"{files[0]}: the mixture and its sources have different sample rates "
                        f"({', '.join(f'{f.name} {i.samplerate} Hz' for f, i in zip(files, infos))})")
    lengths = [i.frames for i in infos]
    if len(set(lengths)) > 1:
        raise DataError(f"{files[0]}: the mixture and its sources differ in length "
                        f"({', '.join(f'{f.parent.name}/{f.name} {n}' for f, n in zip(files, lengths))} samples)")
    if lengths[0] == 0:
        raise DataError(f"{files[0]}: empty audio file")
    return lengths[0], infos[0].samplerate


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


# ---------------------------------------------------------------------------------------
# audio I/O
# ---------------------------------------------------------------------------------------


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> np.ndarray:
    """A mono file as float32 in [-1, 1], resampled to ``sample_rate`` when given."""
    import soundfile as sf

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as err:
        raise DataError(f"{path}: cannot be read as audio: {err}") from None
    if audio.shape[1] != 1:
        raise DataError(f"{path}: expected a mono file, found {audio.shape[1]} channels")
    audio = audio[:, 0]
    if sample_rate is not None and rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
    return audio


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling: soxr (high quality) if installed, else scipy's polyphase filter."""
    if rate_in == rate_out:
        return audio.astype(np.float32)
    try:
        import soxr

        return soxr.resample(audio.astype(np.float32), rate_in, rate_out, quality="HQ").astype(np.float32)
    except ImportError:
        from scipy.signal import resample_poly

        g = math.gcd(int(rate_in), int(rate_out))
        return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, subtype="PCM_16")


def _require_soundfile() -> None:
    try:
        import soundfile  # noqa: F401
    except ImportError:
        raise DataError("speech separation data needs soundfile: pip install 'seqzoo[audio]' "
                        "(soundfile, soxr)") from None


# ---------------------------------------------------------------------------------------
# datasets and data module
# ---------------------------------------------------------------------------------------


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
    """WSJ0-2mix or Libri2Mix mixtures: train crops, whole-utterance validation and test."""

    dim_names: ClassVar[tuple[str, ...]] = ("n_sources",)

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
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if layout not in ("wsj0-2mix", "libri2mix"):
            raise ConfigError(f"layout must be 'wsj0-2mix' or 'libri2mix', got {layout!r}")
        if n_sources < 2:
            raise ConfigError(f"n_sources must be >= 2, got {n_sources}")
        if segment <= 0 or (val_segment is not None and val_segment <= 0):
            raise ConfigError(f"segment and val_segment must be positive seconds, got {segment}, {val_segment}")
        if eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        self.path, self.layout = path, layout
        self.n_sources, self.sample_rate = n_sources, sample_rate
        self.segment, self.val_segment = segment, val_segment
        self.libri_splits = {**LIBRI_SPLITS, **(libri_splits or {})}
        self.eval_batch_size = eval_batch_size
        self.prepare = prepare
        self.records: dict[str, list[MixtureRecord]] = {}
        self.datasets: dict[str, MixtureDataset] = {}

    @property
    def dims(self) -> dict[str, int]:
        return {"n_sources": self.n_sources}

    def prepare_data(self) -> None:
        self._ensure_data()

    def _ensure_data(self) -> None:
        if Path(self.path).exists():
            return
        if self.prepare:
            materialise(self.prepare, self.path)
            return
        raise DataError(
            f"separation data not found: {self.path} -- put WSJ0-2mix ({{tr,cv,tt}}/{{mix,s1,s2}}/*.wav) or "
            "Libri2Mix (metadata/mixture_<split>_mix_clean.csv) there, or write mixtures with "
            "`seqzoo data prepare speech-mix --out DIR` (real speech) or `seqzoo data synth separation --out DIR`"
        )

    def split_records(self, split: str) -> list[MixtureRecord]:
        if split not in self.records:
            _require_soundfile()
            self._ensure_data()
            if self.layout == "wsj0-2mix":
                self.records[split] = index_wsj0_mix(self.path, WSJ0_SPLITS[split], self.n_sources)
            else:
                name = self.libri_splits[split]
                csv = require_path(Path(self.path) / "metadata" / f"mixture_{name}_mix_clean.csv",
                                   "Libri2Mix metadata CSV", hint="set libri_splits to the split names you have")
                self.records[split] = index_libri_mix(csv, self.path, self.n_sources)
        return self.records[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            if split in self.datasets:
                continue
            seconds = {"train": self.segment, "val": self.val_segment}.get(split)
            segment = int(round(seconds * self.sample_rate)) if seconds else None
            self.datasets[split] = MixtureDataset(self.split_records(split), self.sample_rate, segment,
                                                  random_crop=split == "train")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["train"], shuffle=True, drop_last=True, collate_fn=collate_mixtures,
                          **self.loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            self.setup("validate" if split == "val" else "test")
        kwargs = {**self.loader_kwargs(), "batch_size": self.eval_batch_size}
        return DataLoader(self.datasets[split], shuffle=False, collate_fn=collate_mixtures, **kwargs)


# ---------------------------------------------------------------------------------------
# writing mixtures in the WSJ0-2mix layout
# ---------------------------------------------------------------------------------------


@dataclass
class Utterance:
    """A clean utterance of one speaker at the output rate, normalised to unit active RMS."""

    speaker: str
    name: str
    audio: np.ndarray


def write_mixture_split(root: Path, split: str, pairs: list[tuple[Utterance, Utterance, float]],
                        sample_rate: int) -> None:
    """Write ``<root>/<split>/{mix,s1,s2}/<id>.wav`` and ``mix_2_spk_<split>.txt``.

    Each pair is mixed at its relative level ``snr_db`` (s1 is +snr/2 dB, s2 -snr/2 dB,
    WSJ0-2mix style), truncated to the shorter utterance ("min" mode) and scaled so the
    mixture peaks at 0.9; the written sources are the scaled components of the mixture.
    """
    lines = []
    for i, (a, b, snr_db) in enumerate(pairs):
        n = min(a.audio.shape[0], b.audio.shape[0])
        s1 = a.audio[:n] * 10 ** (snr_db / 40)
        s2 = b.audio[:n] * 10 ** (-snr_db / 40)
        mix = s1 + s2
        scale = 0.9 / max(float(np.abs(mix).max()), float(np.abs(s1).max()), float(np.abs(s2).max()), 1e-8)
        name = f"{i:04d}_{a.speaker}_{b.speaker}.wav"
        for folder, audio in (("mix", mix), ("s1", s1), ("s2", s2)):
            write_audio(root / split / folder / name, (audio * scale).astype(np.float32), sample_rate)
        lines.append(f"{name} {a.speaker}/{a.name} {snr_db / 2:+.4f} {b.speaker}/{b.name} {-snr_db / 2:+.4f}")
    (root / f"mix_2_spk_{split}.txt").write_text("\n".join(lines) + "\n")


def random_pairs(utterances: list[Utterance], n: int, rng: np.random.Generator, max_snr_db: float = 5.0,
                 crop: tuple[float, float] | None = None, sample_rate: int = 8000,
                 weights: dict[str, float] | None = None) -> list[tuple[Utterance, Utterance, float]]:
    """``n`` pairs of utterances by different speakers at a relative level uniform in
    [-max_snr_db, max_snr_db]; with ``crop=(lo, hi)`` seconds each utterance is a random
    excerpt of that length (more distinct training mixtures from few recordings).
    Speakers are drawn in proportion to ``weights`` (default: uniformly)."""
    speakers = sorted({u.speaker for u in utterances})
    if len(speakers) < 2:
        raise DataError(f"mixing needs utterances of at least two speakers, got {speakers}")
    by_speaker = {s: [u for u in utterances if u.speaker == s] for s in speakers}
    p = np.array([(weights or {}).get(s, 1.0) for s in speakers], dtype=np.float64)
    pairs = []
    for _ in range(n):
        s_a, s_b = rng.choice(len(speakers), size=2, replace=False, p=p / p.sum())
        a = by_speaker[speakers[s_a]][rng.integers(len(by_speaker[speakers[s_a]]))]
        b = by_speaker[speakers[s_b]][rng.integers(len(by_speaker[speakers[s_b]]))]
        if crop is not None:
            length = int(rng.uniform(*crop) * sample_rate)
            a, b = _excerpt(a, length, rng), _excerpt(b, length, rng)
        pairs.append((a, b, float(rng.uniform(-max_snr_db, max_snr_db))))
    return pairs


def all_cross_pairs(utterances: list[Utterance], rng: np.random.Generator, max_snr_db: float = 5.0
                    ) -> list[tuple[Utterance, Utterance, float]]:
    """Every pair of whole utterances by different speakers, each at a random relative level."""
    pairs = []
    for i, a in enumerate(utterances):
        for b in utterances[i + 1 :]:
            if a.speaker != b.speaker:
                pairs.append((a, b, float(rng.uniform(-max_snr_db, max_snr_db))))
    return pairs


def _excerpt(u: Utterance, length: int, rng: np.random.Generator) -> Utterance:
    if u.audio.shape[0] <= length:
        return u
    start = int(rng.integers(0, u.audio.shape[0] - length + 1))
    return Utterance(u.speaker, f"{u.name}@{start}", u.audio[start : start + length])


def normalise_active(audio: np.ndarray, floor_db: float = -40.0, hop: int = 160) -> np.ndarray:
    """Trim leading/trailing silence and scale to unit RMS over the active frames of ``hop``
    samples (within ``floor_db`` of the loudest frame): a simple stand-in for ITU-T P.56."""
    audio = audio.astype(np.float64) - float(np.mean(audio))
    n_frames = max(1, len(audio) // hop)
    energy = np.array([np.mean(audio[i * hop : (i + 1) * hop] ** 2) + 1e-12 for i in range(n_frames)])
    active = energy > energy.max() * 10 ** (floor_db / 10)
    first, last = int(np.argmax(active)), n_frames - int(np.argmax(active[::-1]))
    audio = audio[first * hop : last * hop] if n_frames > 1 else audio
    rms = math.sqrt(float(np.mean(energy[first:last][active[first:last]])))
    return (audio / max(rms, 1e-8)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# real speech from Debian packages
# ---------------------------------------------------------------------------------------

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")

# Recordings grouped by speaker. Groups are conservative: recordings whose speakers
# are not documented as different share a group, so groups never share a voice.
SPEECH_GROUPS: dict[str, tuple[str, ...]] = {
    "librivox": tuple(f"{POCKETSPHINX_DATA}/librivox/sense_and_sensibility_01_austen_64kb-{n}.wav"
                      for n in ("0870", "0880", "0890", "0920", "0930")),
    "pocketsphinx": tuple(f"{POCKETSPHINX_DATA}/{n}.raw" for n in ("goforward", "numbers", "something")),
    "tidigits": (f"{POCKETSPHINX_DATA}/tidigits/dhd.2934z.raw",),
    "cards": tuple(f"{POCKETSPHINX_DATA}/cards/00{n}.wav" for n in range(1, 6)),
    "alsa": tuple(f"{ALSA_SOUNDS}/{n}.wav" for n in ("Front_Center", "Front_Left", "Front_Right", "Rear_Center",
                                                      "Rear_Left", "Rear_Right", "Side_Left", "Side_Right")),
}
TEST_GROUPS = ("alsa", "cards")
RAW_RATE = 16000  # pocketsphinx .raw files: 16 kHz, 16-bit little-endian, mono

# Harvard sentences (IEEE 1969 recommended practice, lists 1-3), spoken by espeak-ng voices.
HARVARD_SENTENCES = (
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
)
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
ESPEAK_VARIANTS = ("m1", "m3", "m5", "f1", "f2", "f4")


@register_prepare("speech-mix")
def prepare_speech_mix(out: str, n_train: int = 400, n_val: int = 40, sample_rate: int = 8000, seed: int = 0,
                       espeak: bool = True) -> Path:
    """Real two-speaker mixtures (WSJ0-2mix layout, 8 kHz) from Debian's speech packages.

    Test (``tt``): every pair of whole utterances across the speakers of ``alsa-utils``
    and ``pocketsphinx-testdata/cards`` (40 mixtures of real speech; those speakers
    never occur in training). Training (``tr``) and validation (``cv``): the other real
    recordings (LibriVox reader, pocketsphinx and TIDIGITS speakers) and, with
    ``espeak=True``, 36 espeak-ng voices reading Harvard sentences; validation holds out
    one recording per real speaker and the last six sentences; real speakers fill half
    the training slots (crops of 1.5-3 s, so few recordings give many mixtures). Relative levels are
    uniform in [-5, 5] dB. Needs ``apt-get install pocketsphinx-testdata alsa-utils espeak-ng``.
    """
    _require_soundfile()
    missing = [p for paths in SPEECH_GROUPS.values() for p in paths if not Path(p).exists()]
    if missing:
        raise DataError(
            f"speech-mix needs Debian's speech recordings; not found: {_few(missing)}. Install them with "
            "`apt-get install pocketsphinx-testdata alsa-utils` (or write synthetic mixtures with "
            "`seqzoo data synth separation --out DIR`)"
        )
    if espeak and shutil.which("espeak-ng") is None:
        raise DataError("speech-mix: espeak-ng not found (apt-get install espeak-ng), or pass --espeak false")
    rng = np.random.default_rng(seed)
    recordings = {g: [_read_recording(p, sample_rate) for p in paths] for g, paths in SPEECH_GROUPS.items()}
    train, val, test = [], [], []
    for group, utterances in recordings.items():
        if group in TEST_GROUPS:
            test += utterances
        else:  # hold out the last recording of each training speaker for validation
            train += utterances[:-1] if len(utterances) > 1 else utterances
            val += utterances[-1:] if len(utterances) > 1 else []
    if espeak:
        voices = _espeak_utterances(sample_rate)
        held_out = {f"harvard{j:02d}" for j in range(len(HARVARD_SENTENCES) - 6, len(HARVARD_SENTENCES))}
        train += [u for u in voices if u.name not in held_out]
        val += [u for u in voices if u.name in held_out]
    # real speakers fill as many mixture slots as all espeak voices together
    real = {u.speaker for u in train if not u.speaker.startswith("espeak")}
    synthetic = {u.speaker for u in train} - real
    weights = {s: max(1.0, len(synthetic) / len(real)) for s in real}
    out_path = Path(out)
    with atomic_dir(out_path) as tmp:
        write_mixture_split(tmp, "tr", random_pairs(train, n_train, rng, crop=(1.5, 3.0), sample_rate=sample_rate,
                                                    weights=weights), sample_rate)
        write_mixture_split(tmp, "cv", random_pairs(val, n_val, rng, weights=weights), sample_rate)
        write_mixture_split(tmp, "tt", all_cross_pairs(test, rng), sample_rate)
        (tmp / "README.txt").write_text(prepare_speech_mix.__doc__.strip() + "\n")
    return out_path


def _read_recording(path: str, sample_rate: int) -> Utterance:
    group = next(g for g, paths in SPEECH_GROUPS.items() if path in paths)
    p = Path(path)
    if p.suffix == ".raw":
        audio = resample(np.fromfile(p, dtype="<i2").astype(np.float32) / 32768.0, RAW_RATE, sample_rate)
    else:
        audio = read_audio(p, sample_rate)
    return Utterance(group, p.stem.replace("sense_and_sensibility_01_austen_64kb-", ""), normalise_active(audio))


def _espeak_utterances(sample_rate: int) -> list[Utterance]:
    """Each (voice, variant) is one synthetic speaker reading every Harvard sentence."""
    utterances = []
    with tempfile.TemporaryDirectory() as tmp:
        for v, voice in enumerate(ESPEAK_VOICES):
            for k, variant in enumerate(ESPEAK_VARIANTS):
                speaker = f"espeak-{voice}-{variant}"
                pitch, speed = 35 + 5 * ((v + k) % 5), 140 + 10 * ((v * 2 + k) % 4)
                for j, sentence in enumerate(HARVARD_SENTENCES):
                    wav = Path(tmp) / "u.wav"
                    cmd = ["espeak-ng", "-v", f"{voice}+{variant}", "-p", str(pitch), "-s", str(speed), "-w",
                           str(wav), sentence]
                    done = subprocess.run(cmd, capture_output=True, text=True)
                    if done.returncode != 0 or not wav.exists():
                        raise DataError(f"espeak-ng failed ({' '.join(cmd)}): {done.stderr.strip()}")
                    utterances.append(Utterance(speaker, f"harvard{j:02d}", normalise_active(read_audio(wav, sample_rate))))
    return utterances


# ---------------------------------------------------------------------------------------
# synthetic voiced sources
# ---------------------------------------------------------------------------------------

# (F1, F2, F3) in Hz of a few vowels (Peterson & Barney 1952, adult male averages).
VOWEL_FORMANTS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
                  (570, 840, 2410), (660, 1720, 2410), (490, 1350, 1690), (440, 1020, 2240))


@register_synth("separation")
def synth_separation(out: str, n_train: int = 200, n_val: int = 20, n_test: int = 20, sample_rate: int = 8000,
                     seconds: float = 2.0, seed: int = 0) -> Path:
    """Synthetic two-speaker mixtures in the WSJ0-2mix layout: voiced harmonic sources.

    A "speaker" is a pitch range, a vocal-tract scale and a speaking rate; an utterance
    is a glottal harmonic series with a gliding f0, shaped by three formant resonances
    moving between vowels, under a syllable envelope with pauses. Every mixture pairs a
    low- and a high-pitched voice; test speakers are disjoint from training/validation
    speakers. Mixed at relative levels in [-5, 5] dB.
    """
    _require_soundfile()
    if min(n_train, n_val, n_test) < 1:
        raise ConfigError("n_train, n_val and n_test must be >= 1")
    rng = np.random.default_rng(seed)
    speakers = [_synth_speaker(i, rng) for i in range(12)]
    seen, unseen = speakers[:8], speakers[8:]
    n = int(seconds * sample_rate)

    def pairs(pool, per_speaker, count):
        """``count`` mixtures of a low- and a high-pitched voice (in random order)."""
        utts = [Utterance(spk["name"], f"u{j}", normalise_active(_synth_utterance(spk, n, sample_rate, rng)))
                for spk in pool for j in range(per_speaker)]
        low = [u for u in utts if int(u.speaker[-2:]) % 2 == 0]
        high = [u for u in utts if int(u.speaker[-2:]) % 2 == 1]
        out = []
        for _ in range(count):
            a, b = low[rng.integers(len(low))], high[rng.integers(len(high))]
            out.append((a, b) if rng.random() < 0.5 else (b, a))
        return [(a, b, float(rng.uniform(-5, 5))) for a, b in out]

    out_path = Path(out)
    with atomic_dir(out_path) as tmp:
        write_mixture_split(tmp, "tr", pairs(seen, max(2, n_train // 8), n_train), sample_rate)
        write_mixture_split(tmp, "cv", pairs(seen, 2, n_val), sample_rate)
        write_mixture_split(tmp, "tt", pairs(unseen, 3, n_test), sample_rate)
    return out_path


def _synth_speaker(i: int, rng: np.random.Generator) -> dict:
    low = i % 2 == 0  # alternate low- and high-pitched voices
    return {"name": f"synth{i:02d}", "f0": rng.uniform(85, 140) if low else rng.uniform(170, 260),
            "tract": rng.uniform(0.75, 0.9) if low else rng.uniform(1.2, 1.4), "rate": rng.uniform(3.0, 5.0)}


def _synth_utterance(spk: dict, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sample_rate
    # f0: slow declination plus a random glide per syllable
    f0 = spk["f0"] * (1.0 - 0.1 * t / t[-1] + 0.06 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    # formant tracks: a random vowel per syllable, smoothed between syllables
    syllable = sample_rate / spk["rate"]
    n_syl = int(np.ceil(n / syllable)) + 1
    targets = np.array([VOWEL_FORMANTS[k] for k in rng.integers(len(VOWEL_FORMANTS), size=n_syl)]) * spk["tract"]
    pos = np.arange(n) / syllable
    formants = np.stack([np.interp(pos, np.arange(n_syl), targets[:, j]) for j in range(3)], axis=1)
    signal = np.zeros(n)
    for h in range(1, int(sample_rate / 2 / f0.min())):
        freq = h * f0
        alive = freq < sample_rate / 2 - 100
        gain = sum(1.0 / (1.0 + ((freq - formants[:, j]) / (60.0 + 30 * j)) ** 2) for j in range(3)) / h**0.5
        signal += alive * gain * np.sin(h * phase)
    # syllable envelope: raised-cosine bumps, some syllables silent (pauses)
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * (pos % 1.0))
    envelope *= (rng.random(n_syl) > 0.2)[np.minimum(pos.astype(int), n_syl - 1)]
    return (signal * envelope + 0.003 * rng.standard_normal(n)).astype(np.float32)
