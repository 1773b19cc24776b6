"""Real speech from Debian packages mixed in the WSJ0-2mix layout (``seqzoo data prepare speech-mix``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from seqzoo.datasets.base import atomic_dir, register_prepare
from seqzoo.datasets.separation.reader import (
    Utterance,
    _few,
    _require_soundfile,
    all_cross_pairs,
    normalise_active,
    random_pairs,
    read_audio,
    resample,
    write_mixture_split,
)
from seqzoo.errors import DataError


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
