"""World models with a sequence backbone as the dynamics: S4WM (Deng, Park & Ahn 2023,
"Facing Off World Model Backbones: RNNs, Transformers, and S4").

Generative model, per step t of a sequence of frames x_t, actions a_t and rewards r_t::

    posterior   z_t ~ q(z_t | x_t)              CNN encoder of the current frame only
    backbone    h_{1:T} = Backbone(g_{1:T}),    g_t = MLP([z_{t-1}, a_{t-1}])  (causal)
    prior       z_t ~ p(z_t | h_t)
    decoder     x_t ~ N(Dec(h_t, z_t), 1)       transposed-CNN mean, unit variance
    reward      r_t ~ N(R(h_t, z_t), 1)

Because the posterior sees x_t alone, all posterior samples are drawn at once and the
backbone runs over the whole sequence in parallel (FFT convolution, scan, attention) during
training. At an environment reset (``is_first``) the input (z_{t-1}, a_{t-1}) is zero; the
backbone's state is not cleared there (a parallel backbone cannot restart mid-sequence), the
same in training and imagination.

Loss per step, averaged over batch and time (Dreamer/S4WM's ELBO with KL balancing)::

    L = sum_pixels (Dec - x_t)^2 + (R - r_t)^2
        + beta [ alpha max(KL(sg(q) || p), free) + (1 - alpha) max(KL(q || sg(p)), free) ]

with alpha = 0.8 (the prior learns faster than the posterior is regularised), free nats
``free`` applied to the batch-mean KL (DreamerV2's ``free_avg``). Latents are ``discrete``
(``latent_vars`` categorical variables of ``latent_classes`` classes, one-hot samples with
straight-through gradients, DreamerV2) or ``gaussian`` (diagonal, std = softplus + 0.1).

Imagination (the paper's evaluation): the first ``context`` frames are encoded by the
posterior; from then on each step feeds back the prior's latent: h_t from (z_{t-1},
a_{t-1}), z_t = mode of p(z_t | h_t) (or a sample, ``imagine_sample``), frame and reward
decoded from (h_t, z_t), with the data's actions. Streaming backbones (``streaming``,
built causal) run ``backbone.step`` with constant memory per step. Non-streaming
families (``transformer``, as TSSM without a KV cache here) re-run ``backbone.forward`` over
the growing sequence: O(T) work per step, O(T^2) per rollout.

Metrics (test): ``imag_mse`` -- per-pixel MSE (pixels in [0, 1]) of imagined frames after
the context, never teacher-forced; ``tail_mse`` -- the same over the last ``tail_frames``
imagined frames (the recall frames of the memory-cue task); ``reward_acc`` and
``tail_reward_acc`` -- share of imagined steps whose predicted reward rounds to the true
one (|r_hat - r| < 0.5); ``recon_mse`` -- teacher-forced reconstruction; imagination
throughput ``imag_frames_per_s``. Baseline: copy the last context frame (and its reward).
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from seqzoo.backbones.base import Backbone
from seqzoo.domains.base import Batch, BaseTask
from seqzoo.errors import ConfigError
from seqzoo.export import ExportSpec, state_batch_axes
from seqzoo.domains.worldmodel_net import ImaginationStep, LatentKind, ParallelWorldModel, WorldModelNet

IMAGINATION_METRICS = ("imag_mse", "tail_mse", "reward_acc", "tail_reward_acc")


class WorldModelTask(BaseTask):
    """S4WM world model over any causal backbone: ELBO training, imagination metrics."""

    token_kinds = frozenset({"time"})
    monitor = "val/imag_mse"
    monitor_mode = "min"
    report_metrics = ("test/imag_mse", "test/tail_mse", "test/reward_acc", "test/tail_reward_acc", "test/recon_mse")
    report_modes = ("min", "min", "max", "max", "min")

    def __init__(
        self,
        backbone: Backbone,
        image_size: int,
        in_chans: int,
        action_dim: int,
        seq_len: int,
        context: int = 8,
        tail_frames: int = 8,
        latent: LatentKind = "discrete",
        latent_vars: int = 8,
        latent_classes: int = 8,
        cnn_channels: int = 16,
        kl_balance: float = 0.8,
        free_nats: float = 1.0,
        kl_scale: float = 1.0,
        reward_scale: float = 1.0,
        imagine_sample: bool = False,
        strip_path: str | None = "imagination_strip.png",
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """
        Args:
            backbone: any registered backbone built with causal=True (the dynamics h_t).
            image_size: frame height and width (linked from the data).
            in_chans: image channels (linked from the data).
            action_dim: action width A (linked from the data).
            seq_len: steps per sequence (linked from the data).
            context: frames encoded by the posterior before imagination starts.
            tail_frames: last imagined frames scored separately (tail_mse, tail_reward_acc).
            latent: 'discrete' (categoricals, straight-through) or 'gaussian'.
            latent_vars: number of categorical variables (Gaussian: latent_vars * latent_classes dims).
            latent_classes: classes per categorical variable.
            cnn_channels: channels of the first encoder convolution (doubling per downsampling).
            kl_balance: alpha of KL balancing, the weight of the prior's term KL(sg(q) || p).
            free_nats: each KL term is max(batch-mean KL, free_nats).
            kl_scale: beta, the weight of the balanced KL.
            reward_scale: weight of the reward loss.
            imagine_sample: sample the prior during imagination (default: its mode).
            strip_path: PNG of imagined vs true frames written by `test` into the run folder (None: none).
            optimizer: optimiser factory (default: AdamW with torch's defaults).
            lr_scheduler: learning-rate scheduler factory.
        """
        super().__init__(backbone, optimizer=optimizer, lr_scheduler=lr_scheduler)
        if not backbone.is_causal:
            raise ConfigError(f"WorldModelTask needs backbone {type(backbone).name!r} built with causal=True "
                              "(h_t may only see z_{<t}, a_{<t})")
        if not 1 <= context < seq_len:
            raise ConfigError(f"model.context must be in [1, seq_len - 1] = [1, {seq_len - 1}], got {context}")
        if not 1 <= tail_frames <= seq_len - context:
            raise ConfigError(f"model.tail_frames must be in [1, {seq_len - context}], got {tail_frames}")
        if not 0.0 <= kl_balance <= 1.0 or free_nats < 0:
            raise ConfigError(f"need kl_balance in [0, 1] and free_nats >= 0, got {kl_balance}, {free_nats}")
        self.net = WorldModelNet(backbone, image_size, in_chans, action_dim, latent=latent, n_latents=latent_vars,
                                 n_classes=latent_classes, cnn_channels=cnn_channels)
        self.seq_len, self.context, self.tail_frames = seq_len, context, tail_frames
        self.kl_balance, self.free_nats, self.kl_scale, self.reward_scale = kl_balance, free_nats, kl_scale, reward_scale
        self.imagine_sample, self.strip_path = imagine_sample, strip_path
        self.eval_metrics = nn.ModuleDict({
            stage: MetricCollection({name: MeanMetric() for name in (*IMAGINATION_METRICS, "recon_mse", "loss")},
                                    prefix=f"{stage}/")
            for stage in ("val", "test")
        })
        self._imag_frames, self._imag_seconds, self._strip = 0, 0.0, None

    @classmethod
    def incompatibility(cls, backbone_cls: type[Backbone]) -> str | None:
        reason = super().incompatibility(backbone_cls)
        if reason is None and not backbone_cls.causal:
            return "needs a causal backbone (the dynamics h_t may only see the past)"
        return reason

    # -- data in ----------------------------------------------------------------------
    def _inputs(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        images = batch["image"]
        if images.dim() != 5 or images.shape[-1] != self.net.in_chans:
            raise ValueError(f"expected image (B, T, H, W, {self.net.in_chans}), got {tuple(images.shape)}")
        dtype = self.net.posterior.weight.dtype
        images = images.permute(0, 1, 4, 2, 3).to(dtype) / 255.0
        return images, batch["action"].to(dtype), batch["is_first"].bool()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        """Imagination after ``context`` frames (the task's prediction)."""
        images, actions, is_first = self._inputs(batch)
        return self.net.imagine(images, actions, is_first, self.context, sample=self.imagine_sample)

    def tokens_per_sample(self, batch: Batch) -> int:
        return int(batch["image"].shape[1])

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Per test window (B, 4): imagination MSE (all imagined frames, the last ``tail_frames``)
        and reward accuracy (all, last), as the test metrics measure them but per window."""
        images = self._inputs(batch)[0]
        imagined = self(batch)
        scores = window_scores(imagined["frames"], imagined["reward"], images[:, self.context:],
                               batch["reward"][:, self.context:], self.tail_frames)
        return torch.stack([scores[name] for name in IMAGINATION_METRICS], 1).cpu()

    # -- loss -------------------------------------------------------------------------
    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        images, actions, is_first = self._inputs(batch)
        out = self.net(images, actions, is_first)
        recon = (out["frames"] - images).pow(2).sum((-3, -2, -1)).mean()
        reward = (out["reward"] - batch["reward"].to(out["reward"].dtype)).pow(2).mean()
        latent = self.net.latent
        kl_prior = latent.kl(out["post"].detach(), out["prior"]).mean()  # trains the prior
        kl_post = latent.kl(out["post"], out["prior"].detach()).mean()  # regularises the posterior
        kl = (self.kl_balance * kl_prior.clamp(min=self.free_nats)
              + (1 - self.kl_balance) * kl_post.clamp(min=self.free_nats))
        loss = recon + self.reward_scale * reward + self.kl_scale * kl
        return {"loss": loss, "recon": recon, "reward": reward, "kl": kl_prior,
                "recon_mse": (out["frames"] - images).pow(2).mean()}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch)
        self.log_metrics("train", terms, batch_size=self.batch_size_of(batch), prog_bar=["loss"])
        return terms["loss"]

    # -- evaluation -------------------------------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        self.log_collection(self.eval_metrics["val"], prog_bar=True)

    def on_test_epoch_start(self) -> None:
        self._imag_frames, self._imag_seconds, self._strip = 0, 0.0, None

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        if self._imag_seconds > 0:
            self.log("test/imag_frames_per_s", self._imag_frames / self._imag_seconds, sync_dist=True)
        self.log_collection(self.eval_metrics["test"])
        if self._strip is not None and self.strip_path and self.trainer.is_global_zero:
            path = Path(self.trainer.default_root_dir) / self.strip_path
            save_frame_strip(path, *self._strip, context=self.context,
                             title=f"{type(self.backbone).name}: true (upper) and imagined (lower) frames of "
                                   f"{len(self._strip[0])} test sequences")

    def _evaluate(self, stage: str, batch: Batch) -> None:
        terms = self.loss_terms(batch)
        images, actions, is_first = self._inputs(batch)
        _synchronize(self.device)
        start = time.perf_counter()
        imagined = self.net.imagine(images, actions, is_first, self.context, sample=self.imagine_sample)
        _synchronize(self.device)
        if stage == "test":
            self._imag_seconds += time.perf_counter() - start
            self._imag_frames += imagined["frames"].shape[0] * imagined["frames"].shape[1]
            if self._strip is None:
                shown = min(len(images), 3)
                self._strip = (images[:shown].detach().cpu(), imagined["frames"][:shown].detach().cpu())
        scores = imagination_scores(imagined["frames"], imagined["reward"], images[:, self.context:],
                                    batch["reward"][:, self.context:], self.tail_frames)
        metrics = self.eval_metrics[stage]
        n = len(images)
        for name, value in scores.items():
            metrics[name].update(value, weight=n)
        metrics["recon_mse"].update(terms["recon_mse"], weight=n)
        metrics["loss"].update(terms["loss"], weight=n)

    # -- baseline ---------------------------------------------------------------------
    def baseline(self, datamodule: L.LightningDataModule) -> tuple[str, dict[str, float]]:
        """Copy the last context frame (and its reward) to every imagined step."""
        datamodule.setup("test")
        totals: dict[str, float] = {}
        count = 0
        for batch in datamodule.test_dataloader():
            scores = copy_last_frame_scores(batch, self.context, self.tail_frames)
            n = len(batch["image"])
            for k, v in scores.items():
                totals[k] = totals.get(k, 0.0) + float(v) * n
            count += n
        return "copy last context frame", {f"test/{k}": v / count for k, v in totals.items()}

    # -- export -----------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        """The parallel (teacher-forced) model: images (B, T, C, H, W) in [0, 1], actions (B, T, A)
        -> reconstructed frames, rewards and prior parameters, posterior modes as latents."""
        net = self.net.eval().cpu()
        module = ParallelWorldModel(net)
        gen = torch.Generator().manual_seed(0)
        free_length = not type(net.backbone).export_fixed_length

        def make(b: int, t: int) -> tuple[Tensor, Tensor]:
            images = torch.rand(b, t, net.in_chans, net.image_size, net.image_size, generator=gen)
            actions = F.one_hot(torch.randint(net.action_dim, (b, t), generator=gen), net.action_dim).float()
            return images, actions

        t = min(self.seq_len, 12)
        dynamic = {"images": {0: "batch", 1: "length"} if free_length else {0: "batch"},
                   "actions": {0: "batch", 1: "length"} if free_length else {0: "batch"}}
        checks = [make(2, t), make(3, t + 5 if free_length else t)]
        return ExportSpec(module=module, example_inputs=make(2, t), input_names=["images", "actions"],
                          output_names=["frames", "reward", "prior"], dynamic=dynamic, check_inputs=checks)

    def streaming_requirements(self) -> str | None:
        if not self.net.streams:
            return (f"backbone {type(self.net.backbone).name!r} does not stream: no one-step imagination "
                    "graph (export the parallel model instead)")
        return None

    def export_step_spec(self) -> ExportSpec:
        """One imagination step: (z_{t-1}, a_{t-1}, state...) -> (z_t, frame_t, reward_t, state...)."""
        problems = self.streaming_requirements()
        if problems:
            raise ConfigError(problems)
        net = self.net.eval().cpu()
        module = ImaginationStep(net)
        gen = torch.Generator().manual_seed(0)

        def make(b: int) -> tuple[Tensor, ...]:
            images = torch.rand(b, 4, net.in_chans, net.image_size, net.image_size, generator=gen)
            actions = F.one_hot(torch.randint(net.action_dim, (b, 4), generator=gen), net.action_dim).float()
            return module.warm_inputs(images, actions)

        example = make(2)
        n_state = len(example) - 2
        names = ["latent", "action"] + [f"state_{i}" for i in range(n_state)]
        dynamic = {"latent": {0: "batch"}, "action": {0: "batch"}}
        for name, axis in zip(names[2:], state_batch_axes(net.backbone)):
            if axis is not None:
                dynamic[name] = {axis: "batch"}
        return ExportSpec(module=module, example_inputs=example, input_names=names,
                          output_names=["next_latent", "frame", "reward"] + [f"state_out_{i}" for i in range(n_state)],
                          dynamic=dynamic, check_inputs=[make(2), make(3)])


def window_scores(frames: Tensor, reward: Tensor, true_frames: Tensor, true_reward: Tensor,
                  tail: int) -> dict[str, Tensor]:
    """Per window (B,): per-pixel MSE and reward accuracy (|r_hat - r| < 0.5) over all and the
    last ``tail`` imagined steps.

    ``frames``/``true_frames`` (B, S, C, H, W) in [0, 1]; ``reward``/``true_reward`` (B, S).
    """
    err = (frames.float() - true_frames.float()).pow(2).flatten(2).mean(-1)  # (B, S)
    hit = ((reward.float() - true_reward.float()).abs() < 0.5).float()
    return {"imag_mse": err.mean(1), "tail_mse": err[:, -tail:].mean(1),
            "reward_acc": hit.mean(1), "tail_reward_acc": hit[:, -tail:].mean(1)}


def imagination_scores(frames: Tensor, reward: Tensor, true_frames: Tensor, true_reward: Tensor,
                       tail: int) -> dict[str, Tensor]:
    """:func:`window_scores` averaged over the batch (every window has the same length)."""
    return {k: v.mean() for k, v in window_scores(frames, reward, true_frames, true_reward, tail).items()}


def copy_last_frame_scores(batch: Batch, context: int, tail: int) -> dict[str, Tensor]:
    """Scores of predicting the last context frame and reward for every later step."""
    images = batch["image"].permute(0, 1, 4, 2, 3).float() / 255.0
    reward = batch["reward"].float()
    steps = images.shape[1] - context
    frames = images[:, context - 1:context].expand(-1, steps, -1, -1, -1)
    rewards = reward[:, context - 1:context].expand(-1, steps)
    return imagination_scores(frames, rewards, images[:, context:], reward[:, context:], tail)


def save_frame_strip(path: str | Path, true_frames: Tensor, imagined: Tensor, context: int, title: str = "",
                     max_frames: int = 24) -> Path:
    """PNG: for each sequence, its true frames (upper row; context marked) above the imagined ones.

    ``true_frames`` (N, T, C, H, W) and ``imagined`` (N, T - context, C, H, W) in [0, 1] (a single
    sequence without the N axis is accepted); time steps are sampled evenly from the last context frame.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if true_frames.dim() == 4:
        true_frames, imagined = true_frames[None], imagined[None]
    sequences, steps = true_frames.shape[:2]
    picks = np.unique(np.linspace(context - 1, steps - 1, min(max_frames, steps - context + 1)).round().astype(int))
    fig, axes = plt.subplots(2 * sequences, len(picks), figsize=(0.8 * len(picks) + 0.6, 1.9 * sequences + 0.3),
                             dpi=120, squeeze=False)
    for n in range(sequences):
        for j, t in enumerate(picks):
            top, bottom = axes[2 * n, j], axes[2 * n + 1, j]
            top.imshow(true_frames[n, t].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            if t >= context:
                bottom.imshow(imagined[n, t - context].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            if n == 0:
                top.set_title(f"t={t}" + (" (ctx)" if t < context else ""), fontsize=6)
            top.axis("off")
            bottom.axis("off")
        axes[2 * n, 0].text(-0.15, 0.5, "true", transform=axes[2 * n, 0].transAxes, fontsize=6, ha="right", va="center")
        axes[2 * n + 1, 0].text(-0.15, 0.5, "imagined", transform=axes[2 * n + 1, 0].transAxes, fontsize=6,
                                ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def onnx_rollout_parity(onnx_path: str | Path, net: WorldModelNet, images: Tensor, actions: Tensor,
                        context: int) -> float:
    """Max |onnxruntime - torch| over an imagination rollout of the one-step graph.

    Both start from the same live state (``context`` posterior frames stepped), then each feeds
    its own outputs (latent, state) back for the remaining steps of ``actions``, so errors
    would compound over the rollout rather than be reset at every step.
    """
    import onnxruntime as ort

    step = ImaginationStep(net.eval())
    inputs = step.warm_inputs(images[:, :context], actions[:, :context])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    torch_in, onnx_in = inputs, [t.numpy() for t in inputs]
    worst = 0.0
    with torch.no_grad():
        for t in range(context, actions.shape[1]):
            want = step(*torch_in)
            got = session.run(None, dict(zip(names, onnx_in)))
            worst = max(worst, *(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)))
            torch_in = (want[0], actions[:, t], *want[3:])
            onnx_in = [got[0], actions[:, t].numpy(), *got[3:]]
    return worst
