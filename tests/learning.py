"""What "it learns" means in a test: the trained model beats the untrained one, the domain's
trivial baseline AND the best constant predictor, on the same test windows.

A bar against the trivial baseline alone can be passed by a model that learnt only a constant
(on the shared ETT fixture repeat-last scores 1.742 test MSE, predicting the train mean 1.110,
the window mean 0.966), so every learns test names its constants too.
"""

from __future__ import annotations

import torch


def assert_learns(trained: float, *, untrained: float, baselines: dict[str, float], mode: str = "min",
                  margin: float = 0.0) -> None:
    """``trained`` beats ``untrained`` and every named baseline by at least ``margin`` (a fraction).

    Args:
        trained: the test metric after training.
        untrained: the same metric of the model before training (same seed, same data).
        baselines: name -> metric of each baseline (the trivial one and the constants).
        mode: "min" when lower is better, "max" when higher is.
        margin: required relative improvement over each bar, e.g. 0.05 for 5 %.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    bars = {"untrained model": untrained, **baselines}
    missed = {}
    for name, bar in bars.items():
        need = bar * (1 - margin) if mode == "min" else bar * (1 + margin)
        ok = trained < need if mode == "min" else trained > need
        if not ok:
            missed[name] = bar
    assert not missed, (f"trained metric {trained:.4g} does not beat ({mode}, margin {margin:g}): "
                        + ", ".join(f"{k} {v:.4g}" for k, v in missed.items())
                        + f"; all bars: {', '.join(f'{k} {v:.4g}' for k, v in bars.items())}")


def forecast_constant_baselines(datamodule, n_targets: int) -> dict[str, float]:
    """Test MSE of the constant forecasts over the test windows of a forecasting data module:

    * ``predict zero`` -- the train mean (the data are scaled with train statistics);
    * ``best constant`` -- the per-channel mean of the test targets themselves (an oracle:
      no constant forecast does better on these windows);
    * ``window mean`` -- each window's own mean over its lookback, held over the horizon.
    """
    datamodule.setup("test")
    targets, window_means = [], []
    for batch in datamodule.test_dataloader():
        targets.append(batch["y"].double())
        window_means.append(batch["x"][..., -n_targets:].double().mean(dim=1, keepdim=True).expand_as(batch["y"]))
    y = torch.cat(targets)
    oracle = y.mean(dim=(0, 1), keepdim=True)
    return {
        "predict zero": float((y**2).mean()),
        "best constant": float(((y - oracle) ** 2).mean()),
        "window mean": float(((y - torch.cat(window_means)) ** 2).mean()),
    }


def fit_and_score(trainer_factory, task, datamodule, metric: str) -> tuple[float, float]:
    """(untrained, trained) test ``metric`` of ``task``: tested, fitted, tested again."""
    trainer = trainer_factory()
    datamodule.setup()
    untrained = trainer.test(task, datamodule, verbose=False)[0][metric]
    trainer.fit(task, datamodule)
    trained = trainer.test(task, datamodule, verbose=False)[0][metric]
    return untrained, trained
