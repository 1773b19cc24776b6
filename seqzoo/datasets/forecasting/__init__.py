"""Long-horizon forecasting data in the ETT / Time-Series-Library CSV format.

Format: a CSV whose first column is ``date``, then the variates, the target
(``OT`` by default) last. Windows: ``x = rows[i : i + L]``, ``y = rows[i + L : i + L + H]``
with stride 1. Splits follow Time-Series-Library:

* ``borders=[train_end, val_end, test_end]`` in rows (ETTh: 8640, 11520, 14400;
  ETTm: 34560, 46080, 57600); or
* ``ratios=(0.7, 0.1, 0.2)`` of the file by time (the default);

validation and test windows start ``L`` rows early so their first target follows
the previous split. A StandardScaler is fitted on the training rows only. Features:
``M`` all -> all, ``S`` target -> target, ``MS`` all -> target.
"""

from seqzoo.datasets.forecasting.reader import (
    variate_columns,
    load_forecasting_csv,
    split_bounds,
    TIME_FEATURES,
    time_features,
)
from seqzoo.datasets.forecasting.datamodule import (
    SPLITS,
    WindowDataset,
    ForecastingDataModule,
)
from seqzoo.datasets.forecasting.synthetic import (
    ETT_COLUMNS,
    synth_forecasting,
)
from seqzoo.datasets.forecasting.prepare import (
    PVLIB_TMY3_CHANNELS,
    prepare_pvlib_tmy3,
)

__all__ = [
    "variate_columns",
    "load_forecasting_csv",
    "split_bounds",
    "TIME_FEATURES",
    "time_features",
    "SPLITS",
    "WindowDataset",
    "ForecastingDataModule",
    "ETT_COLUMNS",
    "synth_forecasting",
    "PVLIB_TMY3_CHANNELS",
    "prepare_pvlib_tmy3",
]
