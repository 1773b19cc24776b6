"""Any backbone on any domain: every registered family takes a training and a validation step
in every built domain's task (tiny sizes, the domains' runnable configs on synthetic or
packaged data), or building it is refused with the reason `compare` shows as n/a."""

from __future__ import annotations

import copy
import math

import pytest

from seqzoo.backbones.base import SHARED_KEYWORDS, get_backbone_class, list_backbones
from seqzoo.checkpoints import build_task
from seqzoo.run_config import backbone_holder, class_path, task_class_of
from tests.conftest import make_tiny_trainer
from tests.domains.conftest import DOMAINS


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list_backbones())
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_trains_a_step_or_is_refused_with_a_reason(domain, backbone, domain_data):
    config, dm = domain_data(domain)
    config = copy.deepcopy(config)
    cls = get_backbone_class(backbone)
    base = backbone_holder(config)["backbone"]
    shared = {k: v for k, v in base.get("init_args", {}).items() if k in SHARED_KEYWORDS}
    shared.update(d_model=16, n_layers=1)
    backbone_holder(config)["backbone"] = {"class_path": class_path(cls), "init_args": shared}
    reason = task_class_of(config).incompatibility(cls) or ("cannot be built causal" if shared.get("causal") and not cls.causal else None)
    if reason is None and cls.fixed_tokens:  # built for one token count: refused without it, naming n_tokens
        reason = "n_tokens"
    if reason:  # n/a in compare: building it must fail with the reason, naming the backbone
        with pytest.raises(Exception) as refused:
            build_task(config, dm.dims)
        message = str(refused.value) + str(refused.value.__cause__ or "")
        refused_causal = shared.get("causal") and not cls.causal and "cannot be built causal" in message
        # a fixed-token family refused by the task may first be refused for its missing token count
        refused_count = cls.fixed_tokens and "n_tokens" in message
        assert backbone in message and (reason in message or refused_causal or refused_count), message
        return
    task = build_task(config, dm.dims)
    trainer = make_tiny_trainer(fast_dev_run=1)
    trainer.fit(task, dm)
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if "loss" in k}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses


def test_fixed_token_families_are_built_for_each_fixed_length_task():
    """MambaMixer's channel mixer has one feature per token: a task whose samples all have the
    same length builds it for that length; tasks with free lengths leave it to the config."""
    from seqzoo.backbones.mambamixer import MambaMixer
    from seqzoo.domains.forecasting import ForecastingTask
    from seqzoo.domains.handwriting import HandwritingCharTask
    from seqzoo.domains.pain import PainTask
    from seqzoo.domains.rul import AnomalyDetectionTask, DegradationForecastTask, RULTask

    assert ForecastingTask.fixed_token_keywords(MambaMixer, {}, {"lookback": 96}) == {"n_tokens": 96}
    assert DegradationForecastTask.fixed_token_keywords(MambaMixer, {}, {"lookback": 48}) == {"n_tokens": 48}
    assert RULTask.fixed_token_keywords(MambaMixer, {}, {"lookback": 30, "rul_cap": 125}) == {"n_tokens": 30}
    assert PainTask.fixed_token_keywords(MambaMixer, {}, {"seq_len": 100, "n_channels": 6}) == {"n_tokens": 100}
    # the autoencoder's strided convs shorten the window; handwriting lengths vary
    assert AnomalyDetectionTask.fixed_token_keywords(MambaMixer, {}, {"lookback": 32}) == {}
    assert HandwritingCharTask.fixed_token_keywords(MambaMixer, {}, {"n_channels": 13}) == {}
