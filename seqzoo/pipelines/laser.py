"""The laser predictive-maintenance pipeline (Abdelli et al., JLT 2022): the three trained
stages of :mod:`seqzoo.domains.rul` chained over every device history.

    seqzoo pipeline laser --forecast CKPT --detect CKPT --rul CKPT [--data DIR] [--split test]
                          [--stride N] [--json OUT]

At each evaluation point e of a device history (every ``stride`` rows, and the last
row) the degradation forecaster (:class:`~seqzoo.domains.rul.DegradationForecastTask`)
reads the last L_f rows and predicts the next H values of the target channels; the
detector (:class:`~seqzoo.domains.rul.AnomalyDetectionTask`) reads the last L_d - H
observed target values followed by the H forecast ones (the *predicted* sequence, as
in the paper) and flags it when its reconstruction error exceeds the validation
threshold; the RUL model (:class:`~seqzoo.domains.rul.RULTask`) reads the last L_r rows
and, as in the paper, its estimate is the pipeline's answer only once the detector has
flagged the device (the flag latches); before that the device is reported healthy, i.e.
RUL at the cap (``gated=False``: the RUL model's estimate at every point).
Each stage rebuilds its own data module from its checkpoint's config (so each uses its
own labels, e.g. RUL cap); the three must read the same units with the same scaling of
the targets (checked). Scores where the truth is known: forecast RMSE (scaled units),
anomaly accuracy / precision / recall / F1 (label of row e + H), RUL RMSE / MAE (label
of row e) of the pipeline's answer, of the RUL model alone, and over the points after the
device was flagged.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys

import numpy as np
import torch

from seqzoo.datasets.rul import RULDataModule, window_at
from seqzoo.domains.rul import (
    AnomalyDetectionTask,
    DegradationForecastTask,
    RULTask,
    detection_metrics,
    regression_metrics,
)
from seqzoo.errors import ConfigError, SeqzooError
from seqzoo.checkpoints import build_datamodule, build_task, read_checkpoint_record


def load_stage(ckpt: str, task_cls: type, data: str | None = None):
    """(task, data module) of a trained stage; ``data`` replaces the data folder of its config."""
    config, dims, state = read_checkpoint_record(ckpt)
    task = build_task(config, dims)
    if not isinstance(task, task_cls):
        raise ConfigError(f"{ckpt}: holds a {type(task).__name__}, expected a {task_cls.__name__}")
    task.load_state_dict(state)
    task.eval()
    data_cfg = copy.deepcopy(config.get("data") or {})
    if data is not None:
        data_cfg.setdefault("init_args", {})["path"] = data
    datamodule = build_datamodule({"data": data_cfg})
    if not isinstance(datamodule, RULDataModule):
        raise ConfigError(f"{ckpt}: was trained on {type(datamodule).__name__}, expected RULDataModule")
    datamodule.prepare_data()
    datamodule.read_units()
    return task, datamodule


def run_pipeline(forecast_ckpt: str, detect_ckpt: str, rul_ckpt: str, data: str | None = None,
                 split: str = "test", stride: int = 1, gated: bool = True) -> dict:
    """Run forecast -> anomaly detection -> RUL over every device history of ``split``.

    At each evaluation point e (every ``stride`` rows, and the last row) of a history:
    the forecaster reads the last L_f rows and predicts the next H target values; the
    detector reads the last L_d - H observed target values followed by the H forecast
    ones (the *predicted* sequence, as in the paper) and flags it; the RUL model reads
    the last L_r rows; with ``gated`` its estimate is the answer only from the first
    flagged point of the history on (the RUL cap, "healthy", before). Scores against the
    truth where it is known: forecast RMSE (scaled units), anomaly accuracy/precision/
    recall/F1 (label of row e + H), RUL RMSE/MAE (label of row e) of the pipeline's answer,
    of the RUL model alone, and over the points after the device was flagged.
    """
    forecaster, fdm = load_stage(forecast_ckpt, DegradationForecastTask, data)
    detector, ddm = load_stage(detect_ckpt, AnomalyDetectionTask, data)
    rul_model, rdm = load_stage(rul_ckpt, RULTask, data)
    _check_compatible(fdm, ddm, rdm, split)
    H, n_targets = fdm.horizon, len(fdm.targets)
    observed = ddm.lookback - H
    if observed < 0:
        raise ConfigError(f"the detector's lookback ({ddm.lookback}) is shorter than the forecast horizon ({H})")
    totals = {"forecast_se": 0.0, "forecast_n": 0, "flag": [], "label": [], "rul_pred": [], "rul_true": [],
              "rul_model": [], "rul_flagged": []}
    devices = []
    for k, unit in enumerate(fdm.units[split]):
        feats_f = torch.as_tensor(unit.features)
        rul_unit, anomaly = rdm.units[split][k], ddm.units[split][k].anomaly  # labels of each stage's own data
        feats_r = torch.as_tensor(rul_unit.features)
        T = len(unit.time)
        first = max(fdm.lookback, observed) - 1
        if T - 1 < first:
            devices.append({"device": unit.unit_id, "rows": T, "skipped": f"history shorter than {first + 1} rows"})
            continue
        points = sorted(set(range(first, T, stride)) | {T - 1})
        with torch.no_grad():
            forecast = forecaster.net(torch.stack([window_at(feats_f, e, fdm.lookback) for e in points]))
            targets = feats_f[:, -n_targets:]
            detect_in = torch.stack([
                torch.cat([window_at(targets, e, observed), fc], dim=0)[-ddm.lookback :] if observed else fc
                for e, fc in zip(points, forecast)])
            error = detector.net.error(detect_in)
            flag = detector.flags(error)
            rul = rul_model(dict(x=torch.stack([window_at(feats_r, e, rdm.lookback) for e in points])))
        detected = torch.cummax(flag.long(), dim=0).values.bool()  # the flag latches
        answer = torch.where(detected, rul, torch.full_like(rul, float(rdm.rul_cap))) if gated else rul
        for j, e in enumerate(points):
            if e + H < T:
                totals["forecast_se"] += float((forecast[j] - targets[e + 1 : e + 1 + H]).pow(2).sum())
                totals["forecast_n"] += H * n_targets
                if anomaly[e + H] >= 0:
                    totals["flag"].append(int(flag[j]))
                    totals["label"].append(int(anomaly[e + H]))
            if not np.isnan(rul_unit.rul[e]):
                totals["rul_pred"].append(float(answer[j]))
                totals["rul_model"].append(float(rul[j]))
                totals["rul_true"].append(float(rul_unit.rul[e]))
                totals["rul_flagged"].append(bool(detected[j]))
        last = fdm.unscale(forecast[-1].numpy(), fdm.targets)
        devices.append({
            "device": unit.unit_id, "rows": T, "time": float(unit.time[-1]),
            "forecast": {name: [float(v) for v in last[:, i]] for i, name in enumerate(fdm.targets)},
            "anomaly_error": float(error[-1]), "anomaly_flag": bool(flag[-1]),
            "detected_at": float(unit.time[points[int(detected.long().argmax())]]) if bool(detected.any()) else None,
            "rul_estimate": float(rul[-1]) if bool(detected[-1]) or not gated else None,
            "rul_true": None if np.isnan(rul_unit.rul[-1]) else float(rul_unit.rul[-1]),
        })
    return {"split": split, "horizon": H, "threshold": float(detector.threshold), "rul_cap": rdm.rul_cap,
            "gated": gated, "summary": _summarise(totals), "devices": devices}


def _check_compatible(fdm, ddm, rdm, split: str) -> None:
    """The three stages must read the same units with the same scaling of the targets."""
    problems = []
    if fdm.targets != ddm.targets:
        problems.append(f"forecast targets {fdm.targets} != detector channels {ddm.targets}")
    ids = [[u.unit_id for u in dm.units[split]] for dm in (fdm, ddm, rdm)]
    if not ids[0] == ids[1] == ids[2]:
        problems.append("the stages' data modules list different units (different data folders or formats)")
    elif not problems:
        n = len(fdm.targets)
        for uf, ud in zip(fdm.units[split], ddm.units[split]):
            if not np.allclose(uf.features[:, -n:], ud.features[:, -n:], atol=1e-6):
                problems.append(f"unit {uf.unit_id}: the forecaster and the detector scale the targets differently "
                                "(train them on the same data with the same channels and scaler)")
                break
    if problems:
        raise ConfigError("the three stages do not fit together: " + "; ".join(problems))


def _summarise(totals: dict) -> dict:
    """Forecast RMSE (summed squared errors), anomaly accuracy/precision/recall/F1 and RUL
    RMSE/MAE (torchmetrics, float64 states; an undefined precision/recall/F1 is 0)."""
    out: dict[str, float | int | None] = {}
    n = totals["forecast_n"]
    out["forecast_rmse"] = math.sqrt(totals["forecast_se"] / n) if n else None
    flag, label = torch.as_tensor(totals["flag"], dtype=torch.long), torch.as_tensor(totals["label"], dtype=torch.long)
    out["anomaly_points"] = len(label)
    if len(label):
        scores = detection_metrics()(flag, label)
        out.update({f"anomaly_{name}": float(scores[key]) for key, name in
                    (("acc", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "f1"))})
    pred = torch.as_tensor(totals["rul_pred"], dtype=torch.float64)
    model = torch.as_tensor(totals["rul_model"], dtype=torch.float64)
    true = torch.as_tensor(totals["rul_true"], dtype=torch.float64)
    flagged = torch.as_tensor(totals["rul_flagged"], dtype=torch.bool)
    out["rul_points"] = len(true)
    if len(true):
        out.update({f"rul_{k}": float(v) for k, v in regression_metrics()(pred, true).items()})
        out["rul_rmse_model_only"] = float(regression_metrics()(model, true)["rmse"])
    out["rul_points_flagged"] = int(flagged.sum())
    if flagged.any():
        out["rul_rmse_flagged"] = float(regression_metrics()(pred[flagged], true[flagged])["rmse"])
    return out


def format_report(report: dict) -> str:
    """The pipeline report as a table per device and a summary."""
    lines = [f"three-stage pipeline on the {report['split']} devices (horizon {report['horizon']}, "
             f"anomaly threshold {report['threshold']:.4g}, RUL cap {report['rul_cap']:g})", ""]
    head = ["device", "rows", "last time", "forecast (end of horizon)", "anomaly error", "flag", "RUL est.", "RUL true"]
    rows = []
    for d in report["devices"]:
        if "skipped" in d:
            rows.append([d["device"], str(d["rows"]), "", d["skipped"], "", "", "", ""])
            continue
        forecast = ", ".join(f"{k} {v[-1]:.4g}" for k, v in d["forecast"].items())
        rows.append([d["device"], str(d["rows"]), f"{d['time']:g}", forecast, f"{d['anomaly_error']:.4g}",
                     "ANOMALY" if d["anomaly_flag"] else "normal",
                     "healthy" if d["rul_estimate"] is None else f"{d['rul_estimate']:.1f}",
                     "unknown" if d["rul_true"] is None else f"{d['rul_true']:.1f}"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    lines += ["", "RUL estimates " + ("once a device is flagged (healthy before: RUL at the cap)" if report["gated"]
                                      else "of the RUL model at every point (--ungated)"),
              "", "summary (all evaluation points):"]
    lines += [f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}" for k, v in report["summary"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="seqzoo pipeline laser",
                                description="Laser predictive maintenance: chain the three trained stages "
                                            "(forecast, anomaly flag, RUL) over every device history.")
    p.add_argument("--forecast", required=True, help="checkpoint of a DegradationForecastTask")
    p.add_argument("--detect", required=True, help="checkpoint of an AnomalyDetectionTask")
    p.add_argument("--rul", required=True, help="checkpoint of a RULTask")
    p.add_argument("--data", default=None, help="data folder (default: the one in the checkpoints' configs)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--stride", type=int, default=1, help="rows between evaluation points")
    p.add_argument("--json", default=None, help="also write the full report here")
    p.add_argument("--ungated", action="store_true",
                   help="report the RUL model's estimate at every point (default: only once the device was flagged)")
    opts = p.parse_args(argv)
    try:
        if opts.stride < 1:
            raise ConfigError(f"--stride must be >= 1, got {opts.stride}")
        report = run_pipeline(opts.forecast, opts.detect, opts.rul, data=opts.data, split=opts.split,
                              stride=opts.stride, gated=not opts.ungated)
    except SeqzooError as err:
        print(f"seqzoo pipeline laser: error: {err}", file=sys.stderr)
        return 2
    print(format_report(report))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
