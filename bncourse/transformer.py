"""A tiny transformer for variable-length sequences, with the normalization layer as a choice
(notebook 08: why sequence models do not use BN).

The sequences are MNIST-1D signals cut to a random length and zero-padded back to
:data:`SEQ_LEN`; the padding mask travels with the input as a second channel, so a batch is one
tensor (N, 2, L) and the course's training loop needs no change::

    input (N, 2, L) -> tokens (N, L, d): a linear embedding of each value + learned positions
    -> n_layers x pre-norm block:  t = t + attention(norm(t)),  t = t + mlp(norm(t))
    -> norm -> mean over the real (unpadded) positions -> linear head (N, classes)

Attention never looks at padded positions, and the pooling ignores them. The norms differ in
what their statistics see: ``"layer"``, ``"rms"`` and ``"dyt"`` treat each token alone;
``"batch"`` (``nn.BatchNorm1d`` over the d features, as dropped into this model) averages over
every position of every sequence in the batch, padding included, and in eval mode uses running
averages instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bncourse.nn import DyT, RMSNorm

__all__ = ["SEQ_LEN", "SEQUENCE_NORMS", "variable_lengths", "pad_to_lengths", "TinyTransformer"]

SEQ_LEN = 40
SEQUENCE_NORMS = ("batch", "layer", "rms", "dyt", "none")


def variable_lengths(n: int, seed: int, low: int = 16, high: int = SEQ_LEN) -> Tensor:
    """``n`` lengths drawn uniformly from ``low..high`` (inclusive) by a generator seeded with
    ``seed``: the same data set on every machine."""
    if not 1 <= low <= high:
        raise ValueError(f"expected 1 <= low <= high (got low={low}, high={high})")
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, (n,), generator=g)


def pad_to_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """(N, L) signals -> (N, 2, L): channel 0 the first ``lengths[i]`` values of each signal,
    then zeros; channel 1 the mask (1 for a real position, 0 for padding)."""
    if x.dim() != 2 or lengths.shape != (x.shape[0],):
        raise ValueError(f"expected x of shape (N, L) and lengths of shape (N,) "
                         f"(got {tuple(x.shape)} and {tuple(lengths.shape)})")
    positions = torch.arange(x.shape[1])
    mask = (positions[None, :] < lengths[:, None]).to(x.dtype)             # (N, L)
    return torch.stack([x * mask, mask], dim=1)                             # (N, 2, L)


class _TokenNorm(nn.Module):
    """A norm over the d features of (N, L, d) tokens."""

    def __init__(self, kind: str, d: int) -> None:
        super().__init__()
        if kind not in SEQUENCE_NORMS:
            raise ValueError(f"expected norm to be one of {SEQUENCE_NORMS} (got {kind!r})")
        self.kind = kind
        self.norm = {"batch": lambda: nn.BatchNorm1d(d), "layer": lambda: nn.LayerNorm(d),
                     "rms": lambda: RMSNorm(d), "dyt": lambda: DyT(d),
                     "none": nn.Identity}[kind]()

    def forward(self, tokens: Tensor) -> Tensor:
        if self.kind == "batch":                       # statistics over N and L: (N, d, L)
            return self.norm(tokens.transpose(1, 2)).transpose(1, 2)
        return self.norm(tokens)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, norm: str) -> None:
        super().__init__()
        self.norm1, self.norm2 = _TokenNorm(norm, d), _TokenNorm(norm, d)
        self.attention = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, tokens: Tensor, padding: Tensor) -> Tensor:
        h = self.norm1(tokens)
        tokens = tokens + self.attention(h, h, h, key_padding_mask=padding,
                                         need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


class TinyTransformer(nn.Module):
    """Classifies padded sequences given as (N, 2, L) (:func:`pad_to_lengths`).

    Args:
        d_model: token width. n_layers: blocks. heads: attention heads (dividing d_model).
        norm: one of :data:`SEQUENCE_NORMS`. classes: outputs. seq_len: L.
    """

    def __init__(self, d_model: int = 32, n_layers: int = 2, heads: int = 4, norm: str = "layer",
                 classes: int = 10, seq_len: int = SEQ_LEN) -> None:
        super().__init__()
        self.embed = nn.Linear(1, d_model)
        self.position = nn.Parameter(torch.randn(seq_len, d_model) * 0.1)
        self.blocks = nn.ModuleList(_Block(d_model, heads, norm) for _ in range(n_layers))
        self.norm = _TokenNorm(norm, d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != 2 or x.shape[2] != self.position.shape[0]:
            raise ValueError(f"expected input of shape (N, 2, {self.position.shape[0]}) "
                             f"(got {tuple(x.shape)})")
        signal, mask = x[:, 0], x[:, 1] > 0.5                               # (N, L), (N, L)
        tokens = self.embed(signal.unsqueeze(-1)) + self.position           # (N, L, d)
        for block in self.blocks:
            tokens = block(tokens, ~mask)
        tokens = self.norm(tokens)
        weights = mask.to(tokens.dtype).unsqueeze(-1)                       # (N, L, 1)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)   # (N, d)
        return self.head(pooled)
