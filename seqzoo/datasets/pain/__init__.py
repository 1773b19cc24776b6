"""Protective-behaviour detection data in the EmoPain layout, and a real motion sanity set.

Format: a folder of ``subject_<id>.csv``, one per subject, one row per frame (60 Hz):
the channel columns (motion-capture joint angles and energies, sEMG envelopes: every
column but the two below, numeric), ``exercise`` (what the subject is doing; windows
never cross a change of exercise) and a per-frame label (``protective``: 0/1; any
non-negative integers for a multi-class set). An optional ``subjects.csv``
(``subject_id, split``) fixes a subject split.

Windows of ``window_seconds`` (3 s = 180 frames) every ``stride_seconds`` inside each
exercise segment; a window's label is the majority of its frames (a tie goes to the
higher label, i.e. protective). Protocol: leave-one-subject-out (``split="loso"``: the
test subject is ``fold`` in sorted id order, the next ``loso_val_subjects`` subjects in
that order validate) or a fixed subject split (``split="fixed"``: the id lists, else
``subjects.csv``). Never split by window. A per-channel StandardScaler is fitted on the
training subjects' frames; the training windows' class counts weight the task's loss.

``seqzoo data prepare aeon-basicmotions`` writes UEA BasicMotions (real accelerometer
and gyroscope recordings, 4 activities, 10 Hz) in this layout for the multi-class mode:
each of its 80 series becomes one "subject" (the set has no subject ids), its own
train/test split becomes the fixed split (``subjects.csv``) with 2 training series per
class held out for validation, and the activity code is the label column ``activity``.
"""

from seqzoo.datasets.pain.reader import (
    SPLITS,
    SUBJECT_PREFIX,
    subject_files,
    read_subject,
    segment_windows,
)
from seqzoo.datasets.pain.datamodule import (
    WindowTensors,
    PainDataModule,
)
from seqzoo.datasets.pain.synthetic import (
    EXERCISES,
    synth_pain,
)
from seqzoo.datasets.pain.prepare import (
    BASICMOTIONS_CHANNELS,
    prepare_basicmotions,
)

__all__ = [
    "SPLITS",
    "SUBJECT_PREFIX",
    "subject_files",
    "read_subject",
    "segment_windows",
    "WindowTensors",
    "PainDataModule",
    "EXERCISES",
    "synth_pain",
    "BASICMOTIONS_CHANNELS",
    "prepare_basicmotions",
]
