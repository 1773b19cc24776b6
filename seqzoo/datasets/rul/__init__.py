"""Remaining-useful-life data: laser aging tests and NASA C-MAPSS turbofan engines.

Formats (the user brings the files; nothing is downloaded):

* **laser** -- a folder with ``devices.csv`` (``device_id, split, failed``; split is
  ``train``/``val``/``test``, failed is 0 or 1) and one ``<device_id>.csv`` per device
  with ``time_h, current_mA`` and optionally ``power_mW, temp_C`` (the same columns
  for every device). Lasers age at constant output power, so the drive current
  rises, I(t) = I0 (1 + a t^b); a failed device's record ends at its failure (the
  current crossed its end-of-life threshold, +20 % over I0 by default), a device
  still running at the end of the test (failed = 0) is right-censored. The current
  is fed as its relative rise I/I0 - 1, with I0 the mean of the first
  ``baseline_points`` samples of that device.
* **cmapss** -- ``train_FDxxx.txt``, ``test_FDxxx.txt`` (whitespace, no header, 26
  columns ``unit, cycle, op1..op3, s1..s21``) and ``RUL_FDxxx.txt`` (one integer per
  test unit: its remaining cycles after the last recorded one). Training units run
  to failure. Validation units are drawn from the training file (by unit). A file
  whose first line names its columns (``unit cycle op1 s2 s3 ...``, whitespace or
  commas) may hold any settings and sensors besides the required ``unit`` and
  ``cycle``; ``channels`` picks the inputs by name. Channels constant over the
  training units are named in a warning (or refused: ``constant_channels="error"``).

Labels (time in hours or cycles): RUL_t = remaining life, capped, ``min(rul_cap, RUL_t)``
(the piecewise-linear target of the C-MAPSS literature, cap 125 cycles). A window
is *anomalous* (the unit is degrading) when RUL_t < ``anomaly_rul`` (default: the
cap, where the capped target starts to fall). For a censored laser the true RUL
only has a lower bound, so a label is used only where that bound decides it.

Splits are by unit/device (never by window); the scaler (min-max or standard) is
fitted on the training units' rows only. One data module serves the three stages
of the laser maintenance framework (Abdelli et al., JLT 2022):

* ``stage="forecast"``: window of all channels -> next ``horizon`` values of the
  target channels (the monitored degradation values; laser: the current);
* ``stage="detect"``:   window of the target channels -> anomaly label (training
  windows are normal ones only: the autoencoder learns normal behaviour);
* ``stage="rul"``:      window of all channels -> capped RUL / rul_cap, tested at the
  last cycle of each test unit (``rul_eval="last"``, C-MAPSS) or at every window
  whose label is known (``rul_eval="all"``).
"""

from seqzoo.datasets.rul.reader import (
    SPLITS,
    LASER_REQUIRED,
    LASER_OPTIONAL,
    CMAPSS_COLUMNS,
    CMAPSS_INFORMATIVE,
    Unit,
    PreparedUnit,
    rul_labels,
    read_laser,
    read_cmapss_table,
    cmapss_units,
    read_rul_file,
    read_cmapss,
)
from seqzoo.datasets.rul.datamodule import (
    Stage,
    UnitWindows,
    window_at,
    RULDataModule,
)
from seqzoo.datasets.rul.synthetic import (
    synth_laser,
    synth_cmapss,
)

__all__ = [
    "SPLITS",
    "LASER_REQUIRED",
    "LASER_OPTIONAL",
    "CMAPSS_COLUMNS",
    "CMAPSS_INFORMATIVE",
    "Unit",
    "PreparedUnit",
    "rul_labels",
    "read_laser",
    "read_cmapss_table",
    "cmapss_units",
    "read_rul_file",
    "read_cmapss",
    "Stage",
    "UnitWindows",
    "window_at",
    "RULDataModule",
    "synth_laser",
    "synth_cmapss",
]
