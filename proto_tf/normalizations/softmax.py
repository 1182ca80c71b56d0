"""Softmax attention (the paper's "softmax" rows): dense, streamed in one pass, sharded by
the log-sum-exp merge."""

import numpy as np
import tensorflow as tf

from proto_tf.database_blocks import BlockedDatabase, empty_top, over_blocks, running_top
from proto_tf.normalizations.base import Normalization, register


def masked_softmax(logits: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis where `-inf` logits get 0 and a row of only `-inf`
    maps to zeros (plain softmax would give NaN there)."""
    row_max = tf.reduce_max(logits, axis=-1, keepdims=True)
    row_max = tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))
    unnormalized = tf.exp(logits - row_max)
    return tf.math.divide_no_nan(unnormalized, tf.reduce_sum(unnormalized, axis=-1, keepdims=True))


class Softmax(Normalization):
    """exp(l) / sum exp(l). Streamed: the running maximum logit m, the sum of
    exp(logit - m), the same sums weighted by the values and by the one-hot labels
    (rescaled by exp(m_old - m_new) when m grows) and the top-k logits, in one exact
    pass. Sharded: each shard's m and sums; rescaling each by exp(m - max over shards)
    gives the whole database's (its top-k entries hold its part of the global top-k)."""

    name = "softmax"
    sparse = False

    def dense(self, logits, top_k=None):
        return masked_softmax(logits)

    def reference(self, logits):
        logits = np.asarray(logits, np.float64)
        top = np.max(logits, axis=-1, keepdims=True)
        scaled = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(scaled / scaled.sum(axis=-1, keepdims=True))

    def streamed(self, database: BlockedDatabase, top_k, gather_fraction=None):
        db = database

        def step(i, peak, total, weighted, mass, top_values, top_rows):
            logits, start, end = db.block_logits(i)
            top_values, top_rows, (block_top, columns) = running_top(
                top_values, top_rows, logits, lambda columns: columns + start, top_k
            )
            # The block's own softmax is one fused kernel (maximum, exponentials, sum;
            # faster than those as separate ops); the block's sum of exp(l - max) is
            # 1 / its weight at the block's largest logit, the first of the block's top.
            block_max, block_argmax = block_top[:, 0], columns[:, 0]
            normalized = tf.nn.softmax(logits)
            block_total = 1.0 / tf.gather(normalized, block_argmax, batch_dims=1)
            new_peak = tf.maximum(peak, block_max)
            rescale = tf.exp(peak - new_peak)  # exp(-inf) = 0 before the first block.
            block_scale = block_total * tf.exp(block_max - new_peak)
            one_hot = tf.one_hot(db.labels[start:end], db.num_classes)
            total = total * rescale + block_scale
            weighted = weighted * rescale[:, None] + tf.matmul(normalized, db.values[start:end]) * block_scale[:, None]
            mass = mass * rescale[:, None] + tf.matmul(normalized, one_hot) * block_scale[:, None]
            return new_peak, total, weighted, mass, top_values, top_rows

        initial = (
            tf.fill([db.batch], -float("inf")),
            tf.zeros([db.batch]),
            tf.zeros([db.batch, db.value_size]),
            tf.zeros([db.batch, db.num_classes]),
            *empty_top(db.batch, top_k),
        )
        peak, total, weighted, mass, top_values, top_rows = over_blocks(step, initial, db.blocks)
        return {
            "weighted_values": weighted / total[:, None],
            "confidence": tf.minimum(tf.reduce_max(mass, axis=1) / total, 1.0),
            "top_weights": tf.exp(top_values - peak[:, None]) / total[:, None],
            "top_rows": top_rows,
            "top_logits": top_values,
            # The unnormalised sums, which shards of a database merge (`serving.sharding`).
            "max_logit": peak,
            "sum_exp": total,
            "weighted_sum": weighted,
            "class_mass": mass,
        }

    def shard_entries(self, streamed, entries, database_rows, decision):
        return {
            "entry_logits": streamed["top_logits"],
            "max_logit": streamed["max_logit"],
            "sum_exp": streamed["sum_exp"],
            "weighted_decision": decision(streamed["weighted_sum"]),
            "class_mass": streamed["class_mass"],
        }

    def answer_shard(self, logits, decision, labels, top_k, num_classes):
        chosen = np.argsort(-logits, axis=-1, kind="stable")[:, : min(top_k, logits.shape[-1])]
        top = np.max(logits, axis=-1)
        scaled = np.exp(logits - top[:, None])
        statistics = {
            "max_logit": top,
            "sum_exp": scaled.sum(-1),
            "weighted_decision": scaled @ decision,
            "class_mass": scaled @ np.eye(num_classes)[labels],
        }
        return chosen, np.take_along_axis(logits, chosen, -1), statistics

    def merge(self, answers, logits, decision, labels, num_classes):
        top = np.max(np.stack([a.max_logit for a in answers]), axis=0)
        scale = np.stack([np.exp(a.max_logit - top) for a in answers])  # [shards, B]
        total = np.einsum("sb,sb->b", scale, np.stack([a.sum_exp for a in answers]))
        merged = np.einsum("sb,sbc->bc", scale, np.stack([a.weighted_decision for a in answers])) / total[:, None]
        mass = np.einsum("sb,sbc->bc", scale, np.stack([a.class_mass for a in answers])) / total[:, None]
        return merged, mass, np.exp(logits - top[:, None]) / total[:, None]


SOFTMAX = register(Softmax())
