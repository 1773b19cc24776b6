"""The S4WM world-model network on plain tensors (see ``seqzoo.domains.worldmodel`` for the
model, the loss and imagination): latent distributions, the CNN encoder and decoder,
:class:`WorldModelNet` (posterior -> backbone -> prior, decoder and reward head, and
imagination through ``step`` or by re-running ``forward``), and the two exportable wrappers
(:class:`ParallelWorldModel`, the one-step :class:`ImaginationStep`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.backbones.base import Backbone, State
from seqzoo.errors import ConfigError

LatentKind = Literal["discrete", "gaussian"]


# ---------------------------------------------------------------------------------------
# latent distributions
# ---------------------------------------------------------------------------------------


class LatentSpace(nn.Module):
    """Parameters -> samples, modes and KL divergences of the latent z_t.

    ``discrete``: ``n_latents`` categoricals of ``n_classes`` (z is their concatenated one-hot
    vectors); ``gaussian``: ``n_latents * n_classes`` independent normals (mean, softplus std + 0.1).
    """

    def __init__(self, kind: LatentKind, n_latents: int, n_classes: int) -> None:
        super().__init__()
        if kind not in ("discrete", "gaussian"):
            raise ConfigError(f"latent must be 'discrete' or 'gaussian', got {kind!r}")
        if n_latents < 1 or n_classes < 2:
            raise ConfigError(f"need n_latents >= 1 and n_classes >= 2, got {n_latents}, {n_classes}")
        self.kind, self.n_latents, self.n_classes = kind, n_latents, n_classes
        self.size = n_latents * n_classes
        self.param_size = self.size if kind == "discrete" else 2 * self.size

    def sample(self, params: Tensor) -> Tensor:
        if self.kind == "discrete":
            probs = self._logits(params).softmax(-1)
            index = torch.multinomial(probs.reshape(-1, self.n_classes), 1).reshape(probs.shape[:-1])
            one_hot = F.one_hot(index, self.n_classes).to(probs.dtype)
            return (one_hot + probs - probs.detach()).flatten(-2)  # straight-through
        mean, std = self._normal(params)
        return mean + std * torch.randn_like(std)

    def mode(self, params: Tensor) -> Tensor:
        if self.kind == "discrete":
            logits = self._logits(params)
            # one-hot of the argmax written with comparisons, which ONNX exports as is
            return (logits == logits.amax(-1, keepdim=True)).to(logits.dtype).flatten(-2)
        return self._normal(params)[0]

    def kl(self, q: Tensor, p: Tensor) -> Tensor:
        """KL(q || p) summed over the latent, per leading position."""
        if self.kind == "discrete":
            log_q, log_p = self._logits(q).log_softmax(-1), self._logits(p).log_softmax(-1)
            return (log_q.exp() * (log_q - log_p)).sum((-2, -1))
        (mq, sq), (mp, sp) = self._normal(q), self._normal(p)
        return (torch.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)

    def _logits(self, params: Tensor) -> Tensor:
        return params.unflatten(-1, (self.n_latents, self.n_classes))

    def _normal(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = params.chunk(2, dim=-1)
        return mean, F.softplus(raw) + 0.1


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------


def _downsamplings(image_size: int) -> int:
    n = int(round(math.log2(image_size / 4)))
    if image_size < 8 or 4 * 2**n != image_size:
        raise ConfigError(f"image_size must be 4 * 2^k >= 8 (8, 16, 32, 64, ...), got {image_size}")
    return n


class ConvEncoder(nn.Module):
    """(N, C, H, W) in [0, 1] -> (N, features): stride-2 4x4 convolutions down to 4x4."""

    def __init__(self, in_chans: int, image_size: int, channels: int) -> None:
        super().__init__()
        layers, c_in = [], in_chans
        for i in range(_downsamplings(image_size)):
            c_out = channels * 2**i
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.SiLU()]
            c_in = c_out
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.out_features = c_in * 16

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x - 0.5)


class ConvDecoder(nn.Module):
    """(N, in_features) -> (N, C, H, W) mean image: linear to 4x4, stride-2 transposed convolutions."""

    def __init__(self, in_features: int, in_chans: int, image_size: int, channels: int) -> None:
        super().__init__()
        n = _downsamplings(image_size)
        self.c0 = channels * 2 ** (n - 1)
        self.project = nn.Linear(in_features, self.c0 * 16)
        layers, c_in = [], self.c0
        for i in reversed(range(n)):
            last = i == 0
            c_out = in_chans if last else channels * 2 ** (i - 1)
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if not last:
                layers += [nn.GroupNorm(1, c_out), nn.SiLU()]
            c_in = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return self.net(self.project(features).unflatten(-1, (self.c0, 4, 4))) + 0.5


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.LayerNorm(d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class WorldModelNet(nn.Module):
    """Encoder, posterior, input MLP, backbone, prior, decoder and reward head on plain tensors.

    Images are float (B, T, C, H, W) in [0, 1]; actions (B, T, A); ``is_first`` (B, T) bool.
    """

    def __init__(self, backbone: Backbone, image_size: int, in_chans: int, action_dim: int,
                 latent: LatentKind = "discrete", n_latents: int = 8, n_classes: int = 8,
                 cnn_channels: int = 16, hidden: int | None = None) -> None:
        super().__init__()
        d = backbone.d_model
        hidden = hidden or d
        self.backbone = backbone
        self.image_size, self.in_chans, self.action_dim = image_size, in_chans, action_dim
        self.latent = LatentSpace(latent, n_latents, n_classes)
        z = self.latent.size
        self.encoder = ConvEncoder(in_chans, image_size, cnn_channels)
        self.posterior = nn.Linear(self.encoder.out_features, self.latent.param_size)
        self.inputs = nn.Sequential(nn.Linear(z + action_dim, d), nn.LayerNorm(d), nn.SiLU())
        self.prior = _mlp(d, hidden, self.latent.param_size)
        self.decoder = ConvDecoder(d + z, in_chans, image_size, cnn_channels)
        self.reward = _mlp(d + z, hidden, 1)

    # -- pieces ---------------------------------------------------------------------------
    def posterior_params(self, images: Tensor) -> Tensor:
        b, t = images.shape[:2]
        return self.posterior(self.encoder(images.flatten(0, 1))).unflatten(0, (b, t))

    def backbone_inputs(self, z_prev: Tensor, a_prev: Tensor, is_first: Tensor | None) -> Tensor:
        """g_t = MLP([z_{t-1}, a_{t-1}]), with (z_{t-1}, a_{t-1}) zeroed where an episode starts."""
        x = torch.cat([z_prev, a_prev], dim=-1)
        if is_first is not None:
            x = x * (~is_first).unsqueeze(-1).to(x.dtype)
        return self.inputs(x)

    def decode(self, h: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Mean frame (..., C, H, W) and reward (...) from (h_t, z_t)."""
        features = torch.cat([h, z], dim=-1)
        lead = features.shape[:-1]
        frames = self.decoder(features.reshape(-1, features.shape[-1])).reshape(*lead, self.in_chans,
                                                                               self.image_size, self.image_size)
        return frames, self.reward(features).squeeze(-1)

    # -- teacher-forced (training) ----------------------------------------------------
    def forward(self, images: Tensor, actions: Tensor, is_first: Tensor | None = None,
                sample: bool = True) -> dict[str, Tensor]:
        """All steps in parallel: posterior latents, backbone over the shifted (z, a), prior, decoder."""
        post = self.posterior_params(images)
        z = self.latent.sample(post) if sample else self.latent.mode(post)
        h = self.backbone(self.backbone_inputs(_shift(z), _shift(actions), is_first))
        frames, reward = self.decode(h, z)
        return {"post": post, "prior": self.prior(h), "z": z, "h": h, "frames": frames, "reward": reward}

    # -- imagination ------------------------------------------------------------------
    @property
    def streams(self) -> bool:
        return type(self.backbone).streaming and self.backbone.is_causal

    def imagine(self, images: Tensor, actions: Tensor, is_first: Tensor, context: int, sample: bool = False,
                parallel: bool | None = None) -> dict[str, Tensor]:
        """Condition on ``context`` frames, then roll the prior forward from the actions alone.

        Returns ``frames`` (B, T - context, C, H, W), ``reward`` (B, T - context) and the latents
        ``z`` (B, T, Z) (posterior modes in the context, prior modes or samples after it).
        ``parallel=True`` re-runs ``backbone.forward`` over the growing sequence (the only way for
        non-streaming families); the default steps streaming backbones.
        """
        steps = images.shape[1]
        if not 1 <= context < steps:
            raise ConfigError(f"context must be in [1, {steps - 1}] for sequences of {steps} steps, got {context}")
        parallel = not self.streams if parallel is None else parallel
        if not parallel and not self.streams:
            raise ConfigError(f"backbone {type(self.backbone).name!r} does not stream: imagine with parallel=True")
        z_context = self.latent.mode(self.posterior_params(images[:, :context]))
        pick = self.latent.sample if sample else self.latent.mode
        return (self._imagine_parallel if parallel else self._imagine_stepwise)(
            z_context, actions, is_first, steps, pick)

    def _imagine_stepwise(self, z_context, actions, is_first, steps, pick) -> dict[str, Tensor]:
        batch, context = z_context.shape[:2]
        state = self.backbone.init_state(batch, device=z_context.device, dtype=z_context.dtype)
        z_prev = torch.zeros_like(z_context[:, 0])
        a_prev = torch.zeros_like(actions[:, 0])
        latents, frames, rewards = [], [], []
        for t in range(steps):
            h, state = self.backbone.step(self.backbone_inputs(z_prev, a_prev, is_first[:, t]), state)
            if t < context:
                z = z_context[:, t]
            else:
                z = pick(self.prior(h))
                frame, reward = self.decode(h, z)
                frames.append(frame)
                rewards.append(reward)
            latents.append(z)
            z_prev, a_prev = z, actions[:, t]
        return {"frames": torch.stack(frames, 1), "reward": torch.stack(rewards, 1), "z": torch.stack(latents, 1)}

    def _imagine_parallel(self, z_context, actions, is_first, steps, pick) -> dict[str, Tensor]:
        latents = z_context
        frames, rewards = [], []
        for t in range(z_context.shape[1], steps):
            g = self.backbone_inputs(_shift(latents, 1), _shift(actions[:, :t], 1), is_first[:, :t + 1])
            h = self.backbone(g)[:, -1]
            z = pick(self.prior(h))
            frame, reward = self.decode(h, z)
            frames.append(frame)
            rewards.append(reward)
            latents = torch.cat([latents, z[:, None]], dim=1)
        return {"frames": torch.stack(frames, 1), "reward": torch.stack(rewards, 1), "z": latents}


def _shift(x: Tensor, extra: int = 0) -> Tensor:
    """(B, T, F) -> (B, T + extra, F): x_{t-1} at step t, zeros at t = 0 (extra <= 1)."""
    return F.pad(x, (0, 0, 1, 0))[:, : x.shape[1] + extra]


# ---------------------------------------------------------------------------------------
# the task
# ---------------------------------------------------------------------------------------


class ParallelWorldModel(nn.Module):
    """Export wrapper: teacher-forced pass with posterior modes (deterministic)."""

    def __init__(self, net: WorldModelNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.net(images, actions, None, sample=False)
        return out["frames"], out["reward"], out["prior"]


class ImaginationStep(nn.Module):
    """Export wrapper of one imagination step with the prior's mode.

    (z_{t-1} (B, Z), a_{t-1} (B, A), *state) -> (z_t, frame_t (B, C, H, W), reward_t (B,), *state_out).
    """

    def __init__(self, net: WorldModelNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, latent: Tensor, action: Tensor, *state: Tensor):
        h, new_state = self.net.backbone.step(self.net.backbone_inputs(latent, action, None), tuple(state))
        z = self.net.latent.mode(self.net.prior(h))
        frame, reward = self.net.decode(h, z)
        return (z, frame, reward, *new_state)

    @torch.no_grad()
    def warm_inputs(self, images: Tensor, actions: Tensor) -> tuple[Tensor, ...]:
        """(z, a, state) after stepping the posterior latents of ``images`` (a live state)."""
        net = self.net
        z_context = net.latent.mode(net.posterior_params(images))
        state: State = net.backbone.init_state(images.shape[0], dtype=images.dtype)
        z_prev = torch.zeros_like(z_context[:, 0])
        a_prev = torch.zeros_like(actions[:, 0])
        for t in range(images.shape[1]):
            _, state = net.backbone.step(net.backbone_inputs(z_prev, a_prev, None), state)
            z_prev, a_prev = z_context[:, t], actions[:, t]
        return (z_prev, a_prev, *state)


# ---------------------------------------------------------------------------------------
# scores, baseline, pictures
# ---------------------------------------------------------------------------------------
