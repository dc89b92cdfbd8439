"""A decoder-only transformer (GPT), built from the pieces AGD knows.

    model = GPT(GPTConfig(depth=4, width=128, heads=2, context=128, vocab=256))
    logits = model(tokens)              # (batch, T) int64 -> (batch, T, vocab)

Every matrix is a ``Linear`` (the token embedding too, see ``TokenEmbedding``), so
AGD's roles, scales and orthogonal init apply as for the image models; the
parameters' roles come from the fx trace (``agd_ray.optim.roles``). Per block,
pre-norm and a plain residual sum:

    x = x + W_O attn(W_Q n1(x), W_K n1(x), W_V n1(x))      causal, RoPE on q and k
    x = x + W_2 gelu(W_1 n2(x))                             W_1: width -> 4 width

then ``logits = W_U n_f(x)`` (untied). Norms are LayerNorms with a gain and (only
with ``bias``) a shift. Positions enter through rotary embeddings (RoPE, no
parameters): nothing more for AGD to scale. Attention is torch's
``scaled_dot_product_attention`` (flash / memory-efficient kernels on a GPU), with
its 1/sqrt(d_head) logit scale. How AGD treats each of these parameters, and why,
is in ``agd_ray.optim.agd``'s docstring (ARCHITECTURE.md, "AGD for transformers").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class GPTConfig:
    depth: int  # transformer blocks
    width: int  # d_model
    heads: int
    context: int  # tokens per sequence (the longest the rotary tables cover)
    vocab: int
    bias: bool = False

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"{self.heads} heads do not divide width {self.width}")
        if (self.width // self.heads) % 2:
            raise ValueError(
                f"rotary embeddings need an even head width, got {self.width // self.heads}"
            )


class TokenEmbedding(nn.Linear):
    """The token embedding as AGD sees it: a (width x vocab) matrix W acting on the
    one-hot token scaled to RMS 1, sqrt(vocab) * e_i, like any input the paper's
    layers read (it scales one-hot targets by sqrt(num_classes) alike). Its scale is
    then the paper's s = sqrt(width / vocab). Computed as a lookup, not a product."""

    def __init__(self, vocab: int, width: int):
        super().__init__(vocab, width, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.weight.t()) * math.sqrt(self.in_features)


def rotary_tables(context: int, head_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE's angles, each (context, head_width / 2), computed on the
    CPU (moved with the model): under ``torch.device("meta")``, where the sweep's
    driver counts parameters, meta kernels would import torch._dynamo (1.8 s)."""
    steps = torch.arange(0, head_width, 2, dtype=torch.float32, device="cpu")
    freq = 10_000 ** (-steps / head_width)
    angle = torch.outer(torch.arange(context, dtype=torch.float32, device="cpu"), freq)
    return angle.cos(), angle.sin()


@torch.fx.wrap  # one opaque call in an fx trace (the slice depends on the input's length)
def first_rows(table: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The table's rows for the positions of ``tokens`` (batch, T)."""
    return table[: tokens.shape[1]]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on (batch, heads, T, head_width): each pair of features turned by its angle."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    turned = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return turned.flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with separate W_Q, W_K, W_V, W_O (each width x width)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.k = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.v = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)
        self.o = nn.Linear(cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, heads, T, C / heads)
            return t.view(B, T, self.heads, C // self.heads).transpose(1, 2)

        q = rotate(split(self.q(x)), cos, sin)
        k = rotate(split(self.k(x)), cos, sin)
        y = F.scaled_dot_product_attention(q, k, split(self.v(x)), is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.up = nn.Linear(cfg.width, 4 * cfg.width, bias=cfg.bias)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * cfg.width, cfg.width, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token ids (batch, T <= context) -> next-token logits (batch, T, vocab)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = TokenEmbedding(cfg.vocab, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, bias=cfg.bias)
        self.unembed = nn.Linear(cfg.width, cfg.vocab, bias=cfg.bias)
        cos, sin = rotary_tables(cfg.context, cfg.width // cfg.heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cos, sin = first_rows(self.cos, tokens), first_rows(self.sin, tokens)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.unembed(self.norm(x))
