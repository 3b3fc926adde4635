"""The shared Transformer backbone (SASRec) and the latent reasoning machinery on top of it.

Sequences are left-padded with item 0. Positions count back from the newest
item (the newest always gets the last position embedding), so a batch padded
to its own longest sequence gives exactly the states a batch padded to
``max_len`` would: batches are cut to their length to save work.

Latent reasoning feeds states back as extra tokens. A reasoning token at
sequence position ``t`` attends to the sequence's keys and values up to ``t``
(computed once, the cache) and to the earlier reasoning tokens of its own
chain, so a step costs one position per chain, not a re-encode. Chains are
stacked along the query axis: ``slots = chains * positions``. Training runs a
chain at every position (the all-prefixes equivalent of one target per
prefix); inference runs one chain per stream at the last position.

Layers are pre-norm by default; ``model.norm: post`` gives the layout of
RecBole and the released ReaRec code, ``model.norm: sasrec`` that of the
original SASRec code and RecTools (see ``Block``). On Beauty (full softmax,
one seed) pre and post gave the same test NDCG@10 within 0.0004 for SASRec
and ReaRec-ERL (bench/RESULTS.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from reaflow.settings import ModelSettings


@dataclass
class SequenceCache:
    """Per-layer keys and values of the encoded sequence, and which keys a position may see."""

    keys: list[torch.Tensor]  # layers x [B, heads, L, head_dim]
    values: list[torch.Tensor]
    key_mask: torch.Tensor  # [B, 1, L] True where the key is a real item

    @property
    def length(self) -> int:
        return self.key_mask.shape[-1]

    def contiguous(self) -> "SequenceCache":
        """The keys and values laid out [B, heads, L, head_dim] in memory.

        They are strided views of the fused projection; a reasoning step's
        matrix product would copy them into this layout at every step, so a
        chain does it once (scoring with ERL and PLR about 4% faster;
        bench/RESULTS.md).
        """
        return SequenceCache([k.contiguous() for k in self.keys], [v.contiguous() for v in self.values], self.key_mask)


class ItemEmbedding(nn.Module):
    """Item ids to vectors; optionally fused with a fixed per-item knowledge embedding through a learned gate.

    By default the same table scores items at the output (tied weights);
    ``untied`` gives the scoring side a table of its own. The knowledge gate
    fuses into both, so knowledge reaches long-tail items on both sides.
    """

    def __init__(self, num_items: int, hidden: int, knowledge: torch.Tensor | None = None, dropout: float = 0.0,
                 bias: bool = False, untied: bool = False):
        super().__init__()
        self.ids = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        #: The scoring side's own table (``model.untied_output``); None: ``ids`` scores too.
        self.output_ids = nn.Embedding(num_items + 1, hidden, padding_idx=0) if untied else None
        #: Each item's own score term (``model.item_bias``), added to the dot product wherever items are scored.
        self.bias = nn.Parameter(torch.zeros(num_items + 1)) if bias else None
        self.dropout = nn.Dropout(dropout)
        if knowledge is not None:
            if knowledge.shape[0] != num_items + 1:
                raise ValueError(f"knowledge embedding has {knowledge.shape[0]} rows, expected {num_items + 1} (items + padding)")
            self.register_buffer("knowledge", knowledge.float(), persistent=True)
            self.project = nn.Linear(knowledge.shape[1], hidden)
            self.gate = nn.Linear(2 * hidden, hidden)
        else:
            self.knowledge = None
        #: Inside ``one_table``: the (input, scoring) tables, computed once.
        self._step_tables: tuple[torch.Tensor, torch.Tensor] | None = None

    @contextmanager
    def one_table(self) -> Iterator[None]:
        """Inside (a training step, a scoring pass), the tables are computed once: the knowledge gate runs once per table, not once per reader.

        ``dropout`` still draws its own mask for each read: the input items
        drop per occurrence, the scored rows per read. One mask shared by an
        item's inputs and its scored row (RecTools' way) measured lower on
        Beauty (test NDCG@10 0.0484 against 0.0513, seed 1; bench/RESULTS.md).
        Nested, the outer tables stay.
        """
        if self._step_tables is not None:
            yield
            return
        inputs = self._fused(self.ids.weight)
        self._step_tables = (inputs, inputs if self.output_ids is None else self._fused(self.output_ids.weight))
        try:
            yield
        finally:
            self._step_tables = None

    def table(self) -> torch.Tensor:
        """Every item's scoring vector, row 0 = padding (with ``dropout`` in training: the scoring side is regularised too)."""
        return self.dropout(self._undropped(scoring=True))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.embedding(items, self._undropped(scoring=False), padding_idx=0))

    def _undropped(self, scoring: bool) -> torch.Tensor:
        if self._step_tables is not None:
            return self._step_tables[scoring]
        untied = scoring and self.output_ids is not None
        return self._fused(self.output_ids.weight if untied else self.ids.weight)

    def _fused(self, weight: torch.Tensor) -> torch.Tensor:
        if self.knowledge is None:
            return weight
        known = self.project(self.knowledge)
        gate = torch.sigmoid(self.gate(torch.cat([weight, known], dim=-1)))
        return gate * weight + (1 - gate) * known


class Attention(nn.Module):
    def __init__(self, cfg: ModelSettings):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.hidden_size // cfg.heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout = cfg.dropout
        # [2 (key, value), heads, 1, head_dim]; read before the sequence's own keys.
        self.sink = nn.Parameter(torch.randn(2, cfg.heads, 1, self.head_dim) * 0.02) if cfg.attention_sink else None

    def _split(self, x: torch.Tensor, keys_from: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries from ``x``; keys and values from ``keys_from`` (the same tensor except in the SASRec layout)."""
        b, n, d = x.shape
        if keys_from is x:
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            return q, k, v
        q = F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d]).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = F.linear(keys_from, self.qkv.weight[d:], self.qkv.bias[d:]).view(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        b, h, n, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, n, h * d))

    def sequence(self, x: torch.Tensor, keys_from: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Causal self-attention over the sequence; returns the output and this layer's keys and values."""
        q, k, v = self._split(x, keys_from)
        read_k, read_v, mask = self._with_sink(k, v, mask)
        y = F.scaled_dot_product_attention(q, read_k, read_v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self._merge(y), k, v

    def _with_sink(self, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Prepend the sink's key and value (visible to every query); the cache keeps the sequence's alone."""
        if self.sink is None:
            return k, v, mask
        batch = k.shape[0]
        sink_k, sink_v = (part.expand(batch, -1, -1, -1) for part in self.sink)
        seen = mask.new_ones(*mask.shape[:-1], 1)
        return torch.cat([sink_k, k], dim=2), torch.cat([sink_v, v], dim=2), torch.cat([seen, mask], dim=-1)

    def reasoning(self, x: torch.Tensor, keys_from: torch.Tensor, seq_k: torch.Tensor, seq_v: torch.Tensor,
                  seq_mask: torch.Tensor, past: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reasoning tokens ``x`` [B, S, d] attend to the cached sequence (``seq_mask`` [B, 1, S, L]) and to their own chain.

        ``past`` holds this layer's keys/values of the chain's earlier tokens,
        each [B, heads, S, head_dim] aligned slot by slot with ``x``.
        """
        q, k, v = self._split(x, keys_from)
        seq_k, seq_v, seq_mask = self._with_sink(seq_k, seq_v, seq_mask)
        scale = 1.0 / math.sqrt(self.head_dim)
        chain_k = [pk for pk, _ in past] + [k]
        chain_v = [pv for _, pv in past] + [v]
        seq_scores = torch.matmul(q, seq_k.transpose(-1, -2)) * scale
        seq_scores = seq_scores.masked_fill(~seq_mask, float("-inf"))
        chain_scores = torch.stack([(q * ck).sum(-1) for ck in chain_k], dim=-1) * scale  # [B, h, S, j]
        weights = torch.softmax(torch.cat([seq_scores, chain_scores], dim=-1), dim=-1)
        weights = F.dropout(weights, self.dropout, self.training)
        length = seq_k.shape[-2]
        y = torch.matmul(weights[..., :length], seq_v)
        y = y + (weights[..., length:].unsqueeze(-1) * torch.stack(chain_v, dim=-2)).sum(-2)
        return self._merge(y), k, v


class Block(nn.Module):
    """One Transformer layer in one of three layouts (``model.norm``).

    - ``pre``: x + attn(LN(x)), then x + FFN(LN(x)).
    - ``post``: LN(x + attn(x)), then LN(x + FFN(x)) (RecBole, the released ReaRec code).
    - ``sasrec``: q = LN(x); q + attn(queries q, keys and values x), then h + FFN(h) with h = LN(.)
      (the original SASRec code and RecTools: both residuals start from normalised states).
    """

    def __init__(self, cfg: ModelSettings):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden_size)
        self.attention = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size)
        self.ffn = nn.Sequential(nn.Linear(cfg.hidden_size, cfg.inner_size), nn.GELU(),
                                 nn.Linear(cfg.inner_size, cfg.hidden_size))
        self.dropout = nn.Dropout(cfg.dropout)
        self.layout = cfg.norm

    def forward_sequence(self, x, mask):
        queries = self._queries(x)
        y, k, v = self.attention.sequence(queries, self._keys_from(x, queries), mask)
        return self._finish(x, queries, y), k, v

    def forward_reasoning(self, x, seq_k, seq_v, seq_mask, past):
        queries = self._queries(x)
        y, k, v = self.attention.reasoning(queries, self._keys_from(x, queries), seq_k, seq_v, seq_mask, past)
        return self._finish(x, queries, y), k, v

    def _queries(self, x):
        return x if self.layout == "post" else self.norm1(x)

    def _keys_from(self, x, queries):
        return x if self.layout == "sasrec" else queries

    def _finish(self, x, queries, attended):
        """The attention residual, then the feed-forward block with its residual."""
        if self.layout == "post":
            x = self.norm1(x + self.dropout(attended))
            return self.norm2(x + self.dropout(self.ffn(x)))
        if self.layout == "sasrec":
            h = self.norm2(queries + self.dropout(attended))
            return h + self.dropout(self.ffn(h))
        x = x + self.dropout(attended)
        return x + self.dropout(self.ffn(self.norm2(x)))


class Backbone(nn.Module):
    """SASRec encoder: item + position (+ type) embeddings, causal Transformer layers (``Block``), a final LayerNorm unless post-norm.

    ``token_types`` (optional, per input position) marks generated
    "beyond-log" items (1) among logged ones (0) with a learned type embedding.
    """

    def __init__(self, cfg: ModelSettings, num_items: int, knowledge: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.items = ItemEmbedding(num_items, cfg.hidden_size, knowledge, cfg.item_dropout, cfg.item_bias,
                                   cfg.untied_output)
        self.positions = nn.Embedding(cfg.max_len, cfg.hidden_size)
        self.types = nn.Embedding(2, cfg.hidden_size)
        self.input_norm = nn.LayerNorm(cfg.hidden_size) if cfg.input_norm else nn.Identity()
        self.input_dropout = nn.Dropout(cfg.dropout if cfg.input_dropout is None else cfg.input_dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        # Post-norm layers already end in a LayerNorm.
        self.final_norm = nn.Identity() if cfg.norm == "post" else nn.LayerNorm(cfg.hidden_size)
        self.apply(functools.partial(_init_weights, xavier=cfg.init == "xavier"))

    def encode(self, items: torch.Tensor, token_types: torch.Tensor | None = None,
               causal: bool = True) -> tuple[torch.Tensor, SequenceCache]:
        """[B, L] left-padded item ids -> states [B, L, d] (state t has read items up to t) and the cache.

        ``causal=False`` lets every position read the whole sequence (the
        masked-diffusion denoiser); the cache is then not for reasoning chains.
        """
        length = items.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.cfg.max_len}; truncate first")
        positions = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=items.device)
        x = self.items(items) + self.positions(positions)
        if token_types is not None:
            x = x + self.types(token_types)
        x = self.input_dropout(self.input_norm(x))
        valid = items > 0
        order = torch.ones(length, length, dtype=torch.bool, device=items.device)
        if causal:
            order = order.tril()
        # A padding query sees only itself, so no row of the softmax is empty.
        mask = (order & valid[:, None, :]) | torch.eye(length, dtype=torch.bool, device=items.device)
        mask = mask[:, None]
        keys, values = [], []
        for block in self.blocks:
            x, k, v = block.forward_sequence(x, mask)
            keys.append(k)
            values.append(v)
        return self.final_norm(x), SequenceCache(keys, values, valid[:, None, :])

    def reasoning_input(self, state: torch.Tensor) -> torch.Tensor:
        """A state fed back as a token gets the same normalisation and dropout as an item input."""
        return self.input_dropout(self.input_norm(state))

    def reason(self, tokens: torch.Tensor, cache: SequenceCache, seq_mask: torch.Tensor,
               past: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """One reasoning step for ``tokens`` [B, S, d]; ``seq_mask`` [B, 1, S, L] says which cached keys each slot sees.

        ``past[layer]`` is the chain's earlier keys/values; returns the output
        states [B, S, d] and this step's keys/values per layer (append them to
        ``past`` for the next step).
        """
        new = []
        x = tokens
        for layer, block in enumerate(self.blocks):
            x, k, v = block.forward_reasoning(x, cache.keys[layer], cache.values[layer], seq_mask, past[layer] if past else [])
            new.append((k, v))
        return self.final_norm(x), new

    def chain(self, cache: SequenceCache, start: torch.Tensor, positions: torch.Tensor, step_embeddings: torch.Tensor,
              noise: float = 0.0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run reasoning chains from ``start`` [B, S, d]: step t reads its previous state plus ``step_embeddings[t]``.

        With ``noise`` > 0 a twin chain runs beside the last slot's chain: its
        step input is the clean chain's input plus Gaussian noise, and it
        attends to its own earlier tokens (the second view of a contrastive
        term, which reads the newest position only; a twin beside every slot
        would cost a second chain per position). Returns the states of every
        step [B, S, d], and of the twin [B, 1, d] (empty without noise).
        """
        slots = start.shape[1]
        cache = cache.contiguous()
        where = torch.cat([positions, positions[-1:]]) if noise else positions
        # Slot s sees the cached keys up to its own position; the same for every step of the chain.
        causal = torch.arange(cache.length, device=start.device)[None, :] <= where[:, None]  # [S, L]
        seq_mask = (causal[None] & cache.key_mask)[:, None]  # [B, 1, S, L]
        states, twins, past, x = [], [], None, start
        for step in step_embeddings:
            fed = x + step
            if noise:
                newest = fed[:, -1:]
                fed = torch.cat([fed, newest + noise * torch.randn_like(newest)], dim=1)
            y, new = self.reason(self.reasoning_input(fed), cache, seq_mask, past)
            past = append_step(past, new)
            x = y[:, :slots]
            states.append(x)
            if noise:
                twins.append(y[:, slots:])
        return states, twins


def append_step(past: list[list[tuple[torch.Tensor, torch.Tensor]]] | None,
                new: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    if past is None:
        return [[kv] for kv in new]
    return [layer + [kv] for layer, kv in zip(past, new, strict=True)]


def _init_weights(module: nn.Module, xavier: bool = False) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        if xavier:
            nn.init.xavier_normal_(module.weight)
        else:
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
