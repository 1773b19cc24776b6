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

from seqzoo.datasets.separation.reader import (
    WSJ0_SPLITS,
    LIBRI_SPLITS,
    LIBRI_COLUMNS,
    MixtureRecord,
    index_wsj0_mix,
    index_libri_mix,
    read_audio,
    resample,
    write_audio,
    Utterance,
    write_mixture_split,
    random_pairs,
    all_cross_pairs,
    normalise_active,
)
from seqzoo.datasets.separation.datamodule import (
    MixtureDataset,
    collate_mixtures,
    SeparationDataModule,
)
from seqzoo.datasets.separation.synthetic import (
    VOWEL_FORMANTS,
    synth_separation,
)
from seqzoo.datasets.separation.prepare import (
    POCKETSPHINX_DATA,
    ALSA_SOUNDS,
    SPEECH_GROUPS,
    TEST_GROUPS,
    RAW_RATE,
    HARVARD_SENTENCES,
    ESPEAK_VOICES,
    ESPEAK_VARIANTS,
    prepare_speech_mix,
)

__all__ = [
    "WSJ0_SPLITS",
    "LIBRI_SPLITS",
    "LIBRI_COLUMNS",
    "MixtureRecord",
    "index_wsj0_mix",
    "index_libri_mix",
    "read_audio",
    "resample",
    "write_audio",
    "Utterance",
    "write_mixture_split",
    "random_pairs",
    "all_cross_pairs",
    "normalise_active",
    "MixtureDataset",
    "collate_mixtures",
    "SeparationDataModule",
    "VOWEL_FORMANTS",
    "synth_separation",
    "POCKETSPHINX_DATA",
    "ALSA_SOUNDS",
    "SPEECH_GROUPS",
    "TEST_GROUPS",
    "RAW_RATE",
    "HARVARD_SENTENCES",
    "ESPEAK_VOICES",
    "ESPEAK_VARIANTS",
    "prepare_speech_mix",
]
