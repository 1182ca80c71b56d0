"""An exact merge of attention over a database sharded across servers.

A database too large for one machine is split into shards, each served by its own
replica. Each shard answers a batch of queries with a few sufficient statistics of its
part: served, by the `shard_answer` signature of its export (`run/export.py --shard=I/N`;
`ProtoAttend.shard_answer`), read by `answer_from_outputs`; or from its logits in NumPy
(`answer_shard`). A router merges the answers (`merge_answers`) into exactly the
decision, confidence and top prototypes that attention over the whole database gives:

- softmax: a shard's maximum logit m, its sum of exp(logit - m), and the same sums
  weighted by each entry's decision logits and by its label; rescaling each shard by
  exp(m - max over shards) gives the global sums (the streaming "log-sum-exp" merge). Its
  top-k entries contain its part of the global top-k.
- sparsemax and 1.5-entmax: the entries of a shard's own support. A shard's threshold
  tau_s makes its own weights sum to one, a sum no larger than the whole database's at
  any tau, so tau_s <= tau: every entry of the global support lies in its shard's
  support, and the normalisation over the union of the shards' supports is exact.

Each normalisation's part is its own (`proto_tf.normalizations`: `answer_shard`, `merge`).

The decision is linear in the values (`ProtoAttend.decision` has no bias), so a shard
stores each prototype's decision logits `decision(value)` `[C]` instead of its value, and
the merged logits are the weighted sum of those. The merge computes in NumPy (float64).
"""

import dataclasses

import numpy as np

from proto_tf import normalizations


@dataclasses.dataclass
class ShardAnswer:
    """One shard's answer for B queries. `logits`, `decision`, `labels`, `indices`: the
    entries it reports (`[B, S]`, `[B, S, C]`, `[B, S]`, `[B, S]`; padding has logit
    -inf): its support (sparsemax) or its top-k (softmax). Softmax also: `max_logit [B]`,
    `sum_exp [B]`, `weighted_decision [B, C]` and `class_mass [B, C]`, sums over all of
    its entries of exp(logit - max_logit) (times the decision logits / the one-hot label).
    `rows`: the rows of the whole database the shard holds, `(first, last + 1)`, and
    `database_rows` the whole's size: the merge refuses answers that do not cover the
    database exactly once."""

    logits: np.ndarray
    decision: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    max_logit: np.ndarray | None = None
    sum_exp: np.ndarray | None = None
    weighted_decision: np.ndarray | None = None
    class_mass: np.ndarray | None = None
    rows: tuple[int, int] | None = None
    database_rows: int | None = None


def answer_shard(
    logits: np.ndarray,
    decision: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    normalization: str,
    num_classes: int,
    top_k: int = 5,
    rows: tuple[int, int] | None = None,
    database_rows: int | None = None,
) -> ShardAnswer:
    """The answer of a shard holding prototypes with `decision` logits `[Ds, C]`,
    `labels [Ds]` and `indices [Ds]` (their indices, as the model reports them), for
    queries whose attention logits over the shard are `logits [B, Ds]` (q k^T /
    sqrt(d_att)). The shard holds `rows` `(first, last + 1)` of a database of
    `database_rows` rows (default: the shard is the whole)."""
    norm = normalizations.get(normalization)
    logits = np.asarray(logits, np.float64)
    decision, labels, indices = np.asarray(decision, np.float64), np.asarray(labels), np.asarray(indices)
    coverage = dict(rows=tuple(rows or (0, len(labels))), database_rows=database_rows or len(labels))
    chosen, entry_logits, statistics = norm.answer_shard(logits, decision, labels, top_k, num_classes)
    return ShardAnswer(entry_logits, decision[chosen], labels[chosen], indices[chosen], **statistics, **coverage)


def answer_from_outputs(outputs: dict, shard: str = "a shard") -> ShardAnswer:
    """The `ShardAnswer` in a shard's served outputs (`ProtoAttend.shard_answer`, the
    `shard_answer` signature of an export with shard entries): arrays or tensors by name.
    Raises ValueError naming `shard` if a query's sparse support may not fit in the
    entries it reported, since the merge would then not be exact."""
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    if "complete" in arrays and not arrays["complete"].all():
        queries = np.flatnonzero(~arrays["complete"]).tolist()
        raise ValueError(
            f"{shard}: the support of queries {queries} may hold more than the "
            f"{arrays['entry_logits'].shape[1]} entries it reports; export the shards with more "
            "--shard_entries."
        )
    if "shard_rows" not in arrays or not len(arrays["shard_rows"]):
        raise ValueError(
            f"{shard}: the answer does not say which rows of the database it holds (an export made "
            "before shard answers did); export the shards again with run/export.py --shard=I/N."
        )
    statistics = {name: arrays.get(name) for name in ("max_logit", "sum_exp", "weighted_decision", "class_mass")}
    return ShardAnswer(
        arrays["entry_logits"],
        arrays["entry_decision"],
        arrays["entry_labels"],
        arrays["entry_indices"],
        **statistics,
        rows=tuple(int(row) for row in arrays["shard_rows"][0]),
        database_rows=int(arrays["database_rows"][0]),
    )


def merge_answers(answers: list[ShardAnswer], normalization: str, num_classes: int, top_k: int = 5) -> dict:
    """The whole database's answer from its shards' answers: `logits [B, C]` (the
    decision), `confidence [B]` (Eq. 3), and the top `top_k` `prototype_indices`,
    `prototype_weights`, `prototype_labels` (weights 0 past a sparse support)."""
    norm = normalizations.get(normalization)
    _check_coverage(answers)
    logits = np.concatenate([a.logits for a in answers], axis=1)
    decision = np.concatenate([a.decision for a in answers], axis=1)
    labels = np.concatenate([a.labels for a in answers], axis=1)
    indices = np.concatenate([a.indices for a in answers], axis=1)
    merged_logits, mass, weights = norm.merge(answers, logits, decision, labels, num_classes)
    order = np.argsort(-weights, axis=-1, kind="stable")[:, :top_k]
    return {
        "logits": merged_logits,
        "confidence": np.minimum(mass.max(axis=-1), 1.0),
        "prototype_indices": np.take_along_axis(indices, order, -1),
        "prototype_weights": np.take_along_axis(weights, order, -1),
        "prototype_labels": np.take_along_axis(labels, order, -1),
    }


def _check_coverage(answers):
    """A ValueError unless the answers' rows cover the whole database exactly once: a
    duplicated shard would count its prototypes twice, a missing one drop them, and
    either would change the decisions without a word."""
    if not answers:
        raise ValueError("no shard answers to merge.")
    missing = [n for n, a in enumerate(answers) if a.rows is None or a.database_rows is None]
    if missing:
        raise ValueError(f"shard answers {missing} do not say which rows of the database they hold.")
    sizes = sorted({a.database_rows for a in answers})
    if len(sizes) > 1:
        raise ValueError(f"the shard answers come from databases of different sizes ({sizes}).")
    end = 0
    for n, answer in sorted(enumerate(answers), key=lambda item: item[1].rows):
        first, last = answer.rows
        if first < end:
            raise ValueError(f"shard answer {n} holds rows [{first}, {last}), already held by another: a duplicate.")
        if first > end:
            raise ValueError(f"no shard answer holds rows [{end}, {first}) of the {sizes[0]}: a shard is missing.")
        end = last
    if end != sizes[0]:
        raise ValueError(f"no shard answer holds rows [{end}, {sizes[0]}) of the {sizes[0]}: a shard is missing.")
