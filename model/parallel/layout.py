"""Which slice of MiniMax-Text-01 one tensor-parallel rank holds: heads, key/value heads, experts, vocabulary rows.

Pure arithmetic over a config and (rank, size), with no process group: the sharding of modules (`tp`, `ep`), the
sharded checkpoint reader (`load`) and the memory plan (`plan`) all read their slices from here, so they cannot
disagree about who holds what.

The rules: query heads (both layer kinds) split evenly; key/value heads split when the ranks divide them, and when
there are more ranks than key/value heads each rank keeps the one its query heads read (replicated across the ranks
of that group); experts split evenly (expert parallel); vocabulary rows (embedding, lm_head) split into equal parts,
the last padded with rows nobody reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mmx.errors import MmxError
from mmx.model.config import MiniMaxConfig


@dataclass(frozen=True)
class ShardLayout:
    """The part of a model of `config` that rank `rank` of a tensor-parallel group of `size` holds."""

    config: MiniMaxConfig
    rank: int = 0
    size: int = 1

    def __post_init__(self) -> None:
        check_tp(self.config, self.size)
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank {self.rank} is outside a group of {self.size}")

    # ------------------------------------------------------------------------------------------------- heads

    @property
    def heads(self) -> range:
        """Query heads of this rank (global indices; lightning and softmax layers alike)."""
        per = self.config.num_attention_heads // self.size
        return range(self.rank * per, (self.rank + 1) * per)

    @property
    def kv_heads(self) -> range:
        """Key/value heads this rank's query heads read (global indices): a split, or one shared head."""
        group = self.config.num_attention_heads // self.config.num_key_value_heads  # query heads per KV head
        return range(self.heads.start // group, (self.heads.stop - 1) // group + 1)

    @property
    def kv_replicated(self) -> bool:
        """Whether other ranks hold the same key/value heads (more ranks than KV heads)."""
        return self.size > self.config.num_key_value_heads

    # ----------------------------------------------------------------------------------------------- experts

    @property
    def experts(self) -> range:
        """Experts of this rank (global indices)."""
        per = self.config.num_local_experts // self.size
        return range(self.rank * per, (self.rank + 1) * per)

    def expert_owner(self, expert: int) -> int:
        """The rank that holds `expert`."""
        return expert // (self.config.num_local_experts // self.size)

    # ------------------------------------------------------------------------------------------- vocabulary

    @property
    def vocab_rows(self) -> int:
        """Rows of this rank's embedding and lm_head slices (equal on every rank; the last one padded)."""
        return -(-self.config.vocab_size // self.size)

    @property
    def vocab(self) -> range:
        """Token ids whose rows this rank holds (the real ones; padding rows come after them)."""
        start = self.rank * self.vocab_rows
        return range(min(start, self.config.vocab_size), min(start + self.vocab_rows, self.config.vocab_size))

    # ------------------------------------------------------------------------------------- tensor slices

    def local_config(self) -> MiniMaxConfig:
        """The config whose head counts are this rank's: what its cache holds (lightning states, K/V)."""
        return dataclasses.replace(
            self.config, num_attention_heads=len(self.heads), num_key_value_heads=len(self.kv_heads)
        )

    def slice_of(self, name: str) -> tuple[int, int, int] | None:
        """How the global tensor `name` (a native checkpoint key) is cut for this rank: (dim, start, stop); None when
        this rank keeps all of it. Raises KeyError for an expert this rank does not hold (see `holds`)."""
        D = self.config.head_dim
        h, kv = self.heads, self.kv_heads
        parts = name.split(".")
        leaf = ".".join(parts[-2:])
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            return 0, self.vocab.start, self.vocab.stop
        if ".self_attn." in name:
            if leaf == "qkv_proj.weight":
                return 0, 3 * D * h.start, 3 * D * h.stop  # rows interleaved per head: [q_h | k_h | v_h]
            if leaf in ("output_gate.weight", "norm.weight", "q_proj.weight"):
                return 0, D * h.start, D * h.stop
            if leaf in ("k_proj.weight", "v_proj.weight"):
                return 0, D * kv.start, D * kv.stop
            if leaf in ("out_proj.weight", "o_proj.weight"):
                return 1, D * h.start, D * h.stop
        if ".experts." in name and not self.holds(name):
            raise KeyError(f"{name} belongs to rank {self.expert_owner(expert_index(name))}")
        return None

    def holds(self, name: str) -> bool:
        """Whether this rank keeps any part of the global tensor `name` (every tensor but other ranks' experts)."""
        return ".experts." not in name or expert_index(name) in self.experts


def expert_index(name: str) -> int:
    """The expert number in `...block_sparse_moe.experts.{e}.w1.weight`."""
    parts = name.split(".")
    return int(parts[parts.index("experts") + 1])


def check_tp(config: MiniMaxConfig, size: int) -> None:
    """One MmxError when `size` ranks cannot split this model: heads and experts must divide evenly, and the ranks
    must divide the key/value heads or be a multiple of them."""
    if size < 1:
        raise MmxError(f"bad --tp {size}", "use --tp 1 or more")
    H, KV, E = config.num_attention_heads, config.num_key_value_heads, config.num_local_experts
    problems = []
    if H % size:
        problems.append(f"{H} attention heads")
    if E % size:
        problems.append(f"{E} experts")
    if KV % size and size % KV:
        problems.append(f"{KV} key/value heads (the ranks must divide them or be a multiple of them)")
    if problems:
        fits = [n for n in range(1, H + 1) if not H % n and not E % n and (not KV % n or not n % KV)]
        raise MmxError(
            f"--tp {size} cannot split {' and '.join(problems)}",
            f"use --tp {' or '.join(map(str, fits))} for this model",
        )
