"""What an attention normalisation gives every path, and the registry that finds one by
name.

A normalisation maps each query's attention logits over a database to weights that sum to
one. Each path asks it for its part: the dense weights (`dense`, training and small
databases), the exact answer over a database read in blocks (`streamed`), what a shard of a
database reports and the exact merge of those reports (`shard_entries`, `answer_shard`,
`merge`), and the float64 NumPy answer the tests and benchmarks compare with (`reference`).
"""

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from proto_tf.database_blocks import BlockedDatabase


class Normalization:
    """One attention normalisation; subclasses register themselves with `register`.

    Attributes:
      name: the value of `--attention` and of `ProtoAttend(attention=...)`.
      sparse: whether weights outside a support are exactly 0; a shard then reports its
        support's entries rather than sums over all of its entries.
      settings_of: for a normalisation the paper did not train, the one whose flagfiles
        (`flags/<dataset>_<name>.cfg`: steps, learning rates, database sizes) it trains
        with where it has none of its own.
    """

    name: str = ""
    sparse: bool = False
    settings_of: str | None = None

    def dense(self, logits: tf.Tensor, top_k: int | None) -> tf.Tensor:
        """Weights over the last axis of float32 `logits` (-inf entries get 0; a row of
        only -inf gives zeros), differentiable. `top_k` is a speed knob of the exact fast
        paths that never changes the weights (None: the plain reference algorithm)."""
        raise NotImplementedError

    def streamed(self, database: BlockedDatabase, top_k: int, gather_fraction: float) -> dict:
        """The answer over a database read in blocks (`streaming.streamed_attention`)."""
        raise NotImplementedError

    def reference(self, logits: np.ndarray) -> np.ndarray:
        """Weights of each row of `logits` in float64 NumPy (-inf entries get 0)."""
        raise NotImplementedError

    def shard_entry_count(self, shard_entries: int, top_k: int) -> int:
        """Entries a shard reports per query: its top `top_k` where the merge needs only
        sums, or `shard_entries` (room for its whole support) for a sparse one."""
        return shard_entries if self.sparse else top_k

    def shard_entries(self, streamed: dict, entries: int, database_rows: int, decision: Callable) -> dict:
        """The normalisation's part of a shard's answer (`ProtoAttend.shard_answer`) from
        its `streamed` answer with `entries` top prototypes over `database_rows` rows:
        `entry_logits [B, S]` and what `merge` needs besides; `decision(vectors)` maps
        weighted values to decision logits."""
        raise NotImplementedError

    def answer_shard(
        self, logits: np.ndarray, decision: np.ndarray, labels: np.ndarray, top_k: int, num_classes: int
    ) -> tuple[np.ndarray, np.ndarray, dict]:
        """NumPy form of `shard_entries` from a shard's logits `[B, Ds]`: `(chosen [B, S]
        columns, entry logits [B, S], statistics dict)`."""
        raise NotImplementedError

    def merge(
        self, answers: list, logits: np.ndarray, decision: np.ndarray, labels: np.ndarray, num_classes: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(decision logits [B, C], class mass [B, C], weights [B, S])` over the whole
        database from its shards' `answers`, whose entries are concatenated in `logits`,
        `decision` and `labels`."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"name": self.name}


_REGISTRY: dict[str, Normalization] = {}


def register(normalization: Normalization) -> Normalization:
    """Makes `normalization` available under its name; returns it."""
    if not normalization.name or normalization.name in _REGISTRY:
        raise ValueError(f"a normalisation needs a new name; {normalization.name!r} is taken or empty.")
    _REGISTRY[normalization.name] = normalization
    return normalization


def names() -> tuple[str, ...]:
    """The registered normalisations' names, in registration order."""
    return tuple(_REGISTRY)


def get(name: "str | Normalization") -> Normalization:
    """The normalisation named `name` (a `Normalization` is returned as it is).

    Raises ValueError naming the valid names."""
    if isinstance(name, Normalization):
        return name
    if name not in _REGISTRY:
        raise ValueError(f"Unknown attention normalization {name!r}; valid: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]
