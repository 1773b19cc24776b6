"""The WSJ0-2mix and Libri2Mix layouts: split indexes, audio I/O, and writing mixtures in the WSJ0-2mix layout."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import read_csv_checked, require_path
from seqzoo.errors import DataError


WSJ0_SPLITS = {"train": "tr", "val": "cv", "test": "tt"}
LIBRI_SPLITS = {"train": "train-100", "val": "dev", "test": "test"}
LIBRI_COLUMNS = ("mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length")




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


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, subtype=subtype)


def _require_soundfile() -> None:
    try:
        import soundfile  # noqa: F401
    except ImportError:
        raise DataError("speech separation data needs soundfile: pip install 'seqzoo[audio]' "
                        "(soundfile, soxr)") from None


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
