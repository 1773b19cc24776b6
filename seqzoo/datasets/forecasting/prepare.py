"""Real weather from pvlib's TMY3 file (``seqzoo data prepare pvlib-tmy3``)."""

from __future__ import annotations

from pathlib import Path

from seqzoo.datasets.base import atomic_dir, register_prepare
from seqzoo.errors import DataError


PVLIB_TMY3_CHANNELS = {
    "ghi": "ghi",
    "dni": "dni",
    "dhi": "dhi",
    "TotCld (tenths)": "total_cloud",
    "OpqCld (tenths)": "opaque_cloud",
    "temp_dew": "temp_dew",
    "relative_humidity": "relative_humidity",
    "pressure": "pressure",
    "wind_direction": "wind_direction",
    "wind_speed": "wind_speed",
    "precipitable_water": "precipitable_water",
    "Hvis (m)": "visibility",
}


@register_prepare("pvlib-tmy3")
def prepare_pvlib_tmy3(out: str, name: str = "weather.csv") -> Path:
    """Real hourly weather: the TMY3 year for Greensboro, NC, shipped in pvlib (BSD-3).

    8,760 ordered hours; 12 channels (irradiance, cloud, humidity, pressure, wind,
    water, visibility) and the target ``OT`` = dry-bulb air temperature (deg C).
    Months come from different years, so expect jumps at month borders.
    """
    try:
        import pvlib
    except ImportError:
        raise DataError(
            "pvlib-tmy3 needs the pvlib package: pip install 'seqzoo[data]' (or pip install pvlib)"
        ) from None
    source = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"
    if not source.exists():
        raise DataError(f"pvlib is installed but its TMY3 file is missing: {source}")
    # a TMY year has 365 days: put it in a non-leap year so that its 8,760 hours are contiguous
    # (in 2000 the file would skip 29 February, a gap the reader refuses)
    frame, _meta = pvlib.iotools.read_tmy3(str(source), map_variables=True, coerce_year=2001)
    missing = [c for c in (*PVLIB_TMY3_CHANNELS, "temp_air") if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: pvlib did not return column(s) {missing}")
    data = frame[list(PVLIB_TMY3_CHANNELS)].rename(columns=PVLIB_TMY3_CHANNELS).astype("float64")
    data["OT"] = frame["temp_air"].astype("float64")
    data.insert(0, "date", frame.index.tz_localize(None).strftime("%Y-%m-%d %H:%M:%S"))
    with atomic_dir(out) as tmp:
        data.to_csv(tmp / name, index=False, float_format="%.6g")
    return Path(out) / name
