"""Handwriting from a sensor pen (OnHW, Ott et al. 2020/2022): 13 IMU channels at 100 Hz.

Channels, as the OnHW DigiPen records them: front accelerometer (3), rear
accelerometer (3), gyroscope (3), magnetometer (3), tip force (1).

Readers of the public formats (one fold folder each; the fold decides the protocol,
writer-dependent ``*_dep_*`` or writer-independent ``*_indep_*``):

* OnHW-chars: ``<fold>/{X_train,X_test,y_train,y_test}.npy`` -- object arrays of
  (T_i, 13) float arrays and single-character labels;
* OnHW-words / -equations: ``<fold>/all_x_dat_{train,val}_imu.pkl`` (lists of (T_i, 13)
  arrays), ``all_{train,val}_gt.pkl`` (label strings) and ``{train,val}_ids.pkl`` (writer ids).

The held-out part of a fold (``test`` / ``val`` files) is the test split; validation
is a seeded ``val_fraction`` of the training part. Channels are standardised with
statistics of the training part only. The alphabet is the training labels'
characters (class 0 is reserved for the CTC blank); a test character never seen in
training is an error.

Data written here in those formats: ``seqzoo data synth handwriting`` (IMU-like
sequences from per-character stroke templates with pen-up gaps and writer
variation) and ``seqzoo data prepare keel-penbased`` (real pen trajectories of the
UCI pen-based digits, turned into IMU-like sequences, OnHW-chars format).
"""

from seqzoo.datasets.handwriting.reader import (
    N_CHANNELS,
    SAMPLE_RATE,
    CHANNEL_NAMES,
    CHARS_FILES,
    WORDS_FILES,
    Split,
    detect_format,
    read_onhw_chars,
    read_onhw_words,
    check_sequences,
)
from seqzoo.datasets.handwriting.datamodule import (
    SequenceDataset,
    collate_sequences,
    HandwritingDataModule,
)
from seqzoo.datasets.handwriting.synthetic import (
    GRAVITY,
    EARTH_FIELD,
    PEN_LENGTH,
    pen_imu,
    random_writer,
    DEFAULT_WORDS,
    synth_handwriting,
    glyph_templates,
    write_text,
)
from seqzoo.datasets.handwriting.prepare import (
    prepare_keel_penbased,
    pen_digit_imu,
)

__all__ = [
    "N_CHANNELS",
    "SAMPLE_RATE",
    "CHANNEL_NAMES",
    "CHARS_FILES",
    "WORDS_FILES",
    "Split",
    "detect_format",
    "read_onhw_chars",
    "read_onhw_words",
    "check_sequences",
    "SequenceDataset",
    "collate_sequences",
    "HandwritingDataModule",
    "GRAVITY",
    "EARTH_FIELD",
    "PEN_LENGTH",
    "pen_imu",
    "random_writer",
    "DEFAULT_WORDS",
    "synth_handwriting",
    "glyph_templates",
    "write_text",
    "prepare_keel_penbased",
    "pen_digit_imu",
]
