"""Shared building blocks of backbone families and tasks, one concept per module (as timm's
``layers``): families and tasks import from here, never from another family's module.

=====================  =========================================================
``attention``          multi-head self- and cross-attention (SDPA)
``probsparse``         Informer's ProbSparse self-attention
``positions``          sinusoidal / learned / no positions (one ``Positions`` type)
``norms``              LayerNorm / RMSNorm by name, masked BatchNorm, plane norm
``instance_norm``      per-window instance normalisation (RevIN without affine)
``mlp``                channel MLPs by name (timm's Mlp, SwiGLU)
``blocks``             pre-norm and post-norm residual blocks, stochastic depth
``conv``               circular and causal/centred temporal convolutions
``selective_ssm``      the Mamba selective state-space layer
``time_embedding``     forecasting's value + time-feature + position tokens
``generative_decoder`` Informer's generative decoder
``masking``            padding-mask helpers
``state``              streaming-state tuples
``param_cache``        values cached until a module's parameters change
``vandermonde``        (from :mod:`seqzoo.kernels.vandermonde`) the diagonal SSM's convolution kernel
``cauchy``             S4's Cauchy kernel at the roots of unity, chunked, backward by recomputation
=====================  =========================================================

DropPath, LayerScale, trunc_normal_ and PatchEmbed are timm's (``timm.layers``).
"""

from seqzoo.layers.attention import CrossAttention, SelfAttention, attention
from seqzoo.layers.blocks import PostNormBlock, ResidualBlock, stochastic_depth
from seqzoo.layers.cauchy import cauchy_kernel, cauchy_kernel_ref
from seqzoo.layers.conv import CircularConv1d, TemporalConv
from seqzoo.layers.generative_decoder import DecoderLayer, GenerativeDecoder
from seqzoo.layers.instance_norm import instance_denormalise, instance_normalise
from seqzoo.layers.masking import check_mask, mask_positions
from seqzoo.layers.mlp import MlpKind, make_mlp
from seqzoo.layers.norms import MaskedBatchNorm1d, NormKind, PlaneNorm, make_norm
from seqzoo.layers.param_cache import cached_on_tensors
from seqzoo.layers.positions import PositionalEmbedding, Positions, sinusoidal_positions
from seqzoo.layers.probsparse import (
    AttentionKind,
    ProbSparseSelfAttention,
    prob_sparse_attention,
    probsparse_count,
    sample_key_index,
)
from seqzoo.layers.selective_ssm import MambaLayer, SelectiveSSM
from seqzoo.layers.state import State, split_state
from seqzoo.layers.time_embedding import EmbeddingKind, TimeEmbedding
from seqzoo.kernels.vandermonde import vandermonde_kernel, vandermonde_kernel_ref

__all__ = [
    "AttentionKind",
    "CircularConv1d",
    "CrossAttention",
    "DecoderLayer",
    "EmbeddingKind",
    "GenerativeDecoder",
    "MambaLayer",
    "MaskedBatchNorm1d",
    "MlpKind",
    "NormKind",
    "PlaneNorm",
    "PositionalEmbedding",
    "Positions",
    "PostNormBlock",
    "ProbSparseSelfAttention",
    "ResidualBlock",
    "SelectiveSSM",
    "SelfAttention",
    "State",
    "TemporalConv",
    "TimeEmbedding",
    "attention",
    "cached_on_tensors",
    "cauchy_kernel",
    "cauchy_kernel_ref",
    "check_mask",
    "instance_denormalise",
    "instance_normalise",
    "make_mlp",
    "make_norm",
    "mask_positions",
    "prob_sparse_attention",
    "probsparse_count",
    "sample_key_index",
    "sinusoidal_positions",
    "split_state",
    "stochastic_depth",
    "vandermonde_kernel",
    "vandermonde_kernel_ref",
]
