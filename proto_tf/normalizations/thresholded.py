"""Normalisations with a threshold: weights `w(s * l - tau)` that are exactly 0 at or below
tau (sparsemax: w(e) = e, s = 1; 1.5-entmax: w(e) = e^2, s = 1/2), with tau fixed by the
weights summing to one. What they share, written once:

- The threshold of a subset of a row is at most the row's (adding entries only adds
  weight at any tau), so a subset's threshold is a lower bound and every support entry
  lies above it.
- Streamed over a database read in blocks: one pass keeps the maximum logit of every
  chunk of 64-128 keys (`chunk_size`). The threshold of the largest of those maxima is a
  lower bound of each row's, so the support lies in the chunks whose maximum passes it.
  Those (query, chunk) pairs are gathered for the whole batch in rounds (a few chunks per
  query on random keys; a few hundred on trained ones, where a support of a few hundred
  entries is spread over as many chunks), and only their entries above the bound are
  kept; a sort of those within each query gives the exact threshold, and the sums read
  only the support's entries. A batch that would gather more than `gather_fraction` of
  the database per query on average, or more than `MAX_GATHERED_KEYS` keys (e.g. flat
  rows, whose support is everything), runs passes over the blocks instead (each raises
  the threshold from below: Michelot's step for sparsemax, Newton's for entmax), then one
  more pass for the sums.
- Sharded: a shard's own threshold is at most the whole database's, so every entry of
  the global support lies in its shard's support; the normalisation over the union of the
  shards' supports is exact.

Sums are accumulated in another order than the dense path's, so streamed results agree
with it to float32 rounding (not bit for bit); the top prototypes are the same.
"""

import numpy as np
import tensorflow as tf

from proto_tf import blockwise
from proto_tf.database_blocks import DEFAULT_BLOCK_SIZE, as_float32, empty_top, over_blocks, running_top
from proto_tf.normalizations.base import Normalization

# Keys per chunk, the unit whose maximum the scan keeps. Smaller chunks gather fewer keys
# around a scattered support but cost the scan more (a maximum over fewer keys per
# chunk): at 1M x 128, 64 was the fastest on trained keys, and close to 128 on random
# ones. Chunks grow to 128 keys so that a query keeps at most `MAX_CHUNK_MAXIMA` (64 MB
# of maxima at batch 128), and are 128 where D is not static.
CHUNK_SIZE = 128
MIN_CHUNK_SIZE = 64
MAX_CHUNK_MAXIMA = 131072
ROUND_KEY_BYTES = 1 << 26  # Bytes of keys (as float32) gathered in one round of candidate chunks.
# The most keys gathered for one batch; past it (a quarter of 16M prototypes for a batch
# of 16) the kept entries and their sort would need gigabytes, and the passes, which
# hold nothing per entry, run instead.
MAX_GATHERED_KEYS = 1 << 26
# The largest share of the database gathered per query, on average over the batch. A
# gathered logit costs about 20 scanned ones, and the passes read the database 3-6
# times, so past a quarter the passes are cheaper (flat rows, whose support is everything).
DEFAULT_GATHER_FRACTION = 0.25
_BOUND_MAXIMA = 256  # Chunk maxima whose threshold gives the lower bound.
_PASSES = 64


def chunk_size(database_size: int | None, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Keys per chunk of the scan for a database of `database_size` rows (None: not known
    when the graph is built): the smaller of 64 and 128 that keeps at most
    `MAX_CHUNK_MAXIMA` chunk maxima per query, and no more than a block."""
    chunk = CHUNK_SIZE if database_size is None else MIN_CHUNK_SIZE
    while chunk < CHUNK_SIZE and database_size > chunk * MAX_CHUNK_MAXIMA:
        chunk *= 2
    return min(chunk, block_size)


class ThresholdedNormalization(Normalization):
    """A normalisation `w(scale * l - tau)`; subclasses give the rules below.

    Every rule works on `x = scale * (l - m)`, logits less their row maximum m, so a
    threshold near large logits keeps its precision."""

    sparse = True
    scale = 1.0
    needs_squares = False  # Whether the rules read sums of squares (c2, s2).

    def weights_of(self, excess: tf.Tensor) -> tf.Tensor:
        """Weights of entries `excess = x - tau` above the threshold (0 at or below)."""
        raise NotImplementedError

    def sorted_threshold(self, sorted_desc: tf.Tensor) -> tf.Tensor:
        """tau `[..., 1]` of rows of x sorted in descending order (any prefix of a row
        gives a lower bound); +inf for a row of only -inf."""
        raise NotImplementedError

    def prefix_thresholds(self, rank, c1, c2):
        """tau of each prefix of sorted entries, from its size `rank` and the cumulative
        sums of x (`c1`) and of x^2 (`c2`, None unless `needs_squares`)."""
        raise NotImplementedError

    def prefix_in_support(self, rank, x, c1, tau):
        """Whether the `rank`-th largest entry x lies in the support of its prefix (true
        for a prefix of the sorted order)."""
        raise NotImplementedError

    def pass_step(self, tau, count, s1, s2):
        """A threshold between `tau` (a lower bound) and the exact one, from the count,
        sum (`s1`) and sum of squares (`s2`) of the entries above `tau`."""
        raise NotImplementedError

    def numpy_threshold(self, ordered: np.ndarray) -> np.ndarray:
        """tau `[R, 1]` (float64) of rows sorted in descending order (finite, or -inf)."""
        raise NotImplementedError

    def numpy_weights_of(self, excess: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- What every thresholded normalisation does alike. ---

    def reference(self, logits):
        logits = np.asarray(logits, np.float64)
        top = np.max(logits, axis=-1, keepdims=True)
        x = self.scale * (logits - np.where(np.isfinite(top), top, 0.0))
        tau = self.numpy_threshold(-np.sort(-x, axis=-1))
        return self.numpy_weights_of(np.maximum(x - tau, 0.0))

    def streamed(self, database, top_k, gather_fraction=DEFAULT_GATHER_FRACTION):
        return _streamed(self, database, top_k, gather_fraction)

    def shard_entries(self, streamed, entries, database_rows, decision):
        in_support = streamed["top_weights"] > 0
        return {
            "entry_logits": tf.where(in_support, streamed["top_logits"], -float("inf")),
            # The last entry outside the support: no entry past it can be in it.
            "complete": tf.logical_not(in_support[:, -1]) | (entries == database_rows),
        }

    def answer_shard(self, logits, decision, labels, top_k, num_classes):
        weights = self.reference(logits)
        count = max(1, int((weights > 0).sum(axis=-1).max()))
        chosen = np.argsort(-weights, axis=-1, kind="stable")[:, :count]
        support = np.take_along_axis(weights, chosen, -1) > 0
        return chosen, np.where(support, np.take_along_axis(logits, chosen, -1), -np.inf), {}

    def merge(self, answers, logits, decision, labels, num_classes):
        weights = self.reference(logits)
        merged = np.einsum("bs,bsc->bc", weights, decision)
        return merged, np.einsum("bs,bsc->bc", weights, np.eye(num_classes)[labels]), weights

    def shifted(self, logits):
        """x of logits already less their row maximum."""
        return logits if self.scale == 1.0 else self.scale * logits


def _streamed(norm, db, top_k, gather_fraction):
    """`ThresholdedNormalization.streamed`: see the module's docstring."""
    chunk = chunk_size(db.keys.shape[0], db.block_size)
    per_block = -(-db.block_size // chunk)
    chunk_maxima = _chunk_maxima(db, chunk, per_block)  # [B, chunks]
    # A lower bound of the threshold: the threshold of a subset of a row (its chunk
    # maxima). Only chunks whose maximum passes it can hold support entries.
    shift = tf.reduce_max(chunk_maxima, axis=1, keepdims=True)
    best_maxima = tf.math.top_k(chunk_maxima, tf.minimum(_BOUND_MAXIMA, tf.shape(chunk_maxima)[1])).values
    lower = norm.sorted_threshold(norm.shifted(best_maxima - shift))
    candidates = norm.shifted(chunk_maxima - shift) > lower
    needed = tf.reduce_sum(tf.cast(candidates, tf.int64))  # Candidate chunks of the whole batch.
    geometry = (chunk, per_block)

    # The gathered keys against the keys the passes would read, per pass.
    gathered = tf.cast(needed, tf.float32) / tf.cast(tf.size(chunk_maxima, out_type=tf.int64), tf.float32)
    fits = needed * chunk <= MAX_GATHERED_KEYS
    weighted, mass, top_weights, top_rows, top_shifted = tf.cond(
        (gathered <= gather_fraction) & fits,
        lambda: _from_chunks(norm, db, top_k, geometry, chunk_maxima, shift, lower, candidates),
        lambda: _by_passes(norm, db, top_k, shift, lower),
    )
    return {
        "weighted_values": weighted,
        "confidence": tf.minimum(tf.reduce_max(mass, axis=1), 1.0),
        "top_weights": top_weights,
        "top_rows": top_rows,
        "top_logits": top_shifted + shift,
    }


def _chunk_maxima(db, chunk, per_block):
    """One scan: the maximum logit of every chunk of `chunk` consecutive keys, `[B, chunks]`."""

    def scan(i, maxima):
        _, chunk_max = blockwise.block_maxima(db.block_logits(i)[0], chunk)
        padding = [[0, 0], [0, per_block - tf.shape(chunk_max)[1]]]  # The last block's missing chunks.
        return (maxima.write(i, tf.pad(chunk_max, padding, constant_values=-float("inf"))),)

    array = tf.TensorArray(tf.float32, size=db.blocks, element_shape=[None, per_block])
    (maxima,) = over_blocks(scan, (array,), db.blocks)
    return tf.reshape(tf.transpose(maxima.stack(), [1, 0, 2]), [db.batch, -1])


def _chunk_rows(db, geometry, ids):
    """Rows of the database in chunks `ids` (`[..., chunk]`, 0 where not a row) and
    whether they are rows (the last block's chunks may pass its end)."""
    chunk, per_block = geometry
    offsets = (ids % per_block)[..., None] * chunk + tf.range(chunk)  # In the block.
    rows = (ids // per_block)[..., None] * db.block_size + offsets
    valid = (offsets < db.block_size) & (rows < db.size)
    return tf.where(valid, rows, 0), valid


def _from_chunks(norm, db, top_k, geometry, chunk_maxima, shift, lower, candidates):
    """The candidate chunks hold every entry above the lower bound, so the whole support:
    their keys are gathered, `ROUND_KEY_BYTES` per round, and only their entries above
    the bound are kept, as flat (query, x, row) lists. Their threshold, by a sort within
    each query, is the row's (exact: entries below the bound are never in the support);
    the sums read only the support."""
    chunk, batch = geometry[0], db.batch
    # The top prototypes lie in the top_k chunks of largest maxima (each of those maxima
    # is at least every entry of the other chunks): a small gather of its own.
    top_chunks = tf.math.top_k(chunk_maxima, tf.minimum(top_k, tf.shape(chunk_maxima)[1])).indices
    rows, valid = _chunk_rows(db, geometry, top_chunks)  # [B, k, chunk]
    rows, valid = tf.reshape(rows, [batch, -1]), tf.reshape(valid, [batch, -1])
    logits = tf.einsum("bd,bnd->bn", db.queries, as_float32(tf.gather(db.keys, rows))) - shift
    top_values, top_rows, _ = running_top(
        *empty_top(batch, top_k),
        tf.where(valid, logits, -float("inf")),
        lambda columns: tf.gather(rows, columns, batch_dims=1),
        top_k,
    )
    # The candidates as flat (query, chunk) pairs, gathered in rounds: a batch gathers
    # the sum of its queries' candidates, not the batch size times the widest query's.
    pairs = tf.where(candidates)
    width = max(ROUND_KEY_BYTES // (chunk * 4 * int(db.queries.shape[-1])), 1)
    rounds = (tf.shape(pairs, out_type=tf.int32)[0] + width - 1) // width
    query_shift = shift[:, 0]
    # Kept down to the bound less a margin: the scan's products and these may round
    # apart, and an entry the bound let through by a rounding must still be sorted with
    # the rest.
    query_bound = lower[:, 0] - norm.shifted(1e-5 * (1.0 + tf.abs(query_shift)))

    def gather_round(r, queries_kept, logits_kept, rows_kept):
        query, chosen = pairs[r * width : (r + 1) * width, 0], pairs[r * width : (r + 1) * width, 1]
        rows, valid = _chunk_rows(db, geometry, tf.cast(chosen, tf.int32))  # [n, chunk]
        logits = tf.einsum("nd,ncd->nc", tf.gather(db.queries, query), as_float32(tf.gather(db.keys, rows)))
        x = norm.shifted(logits - tf.gather(query_shift, query)[:, None])
        above = tf.where(valid & (x > tf.gather(query_bound, query)[:, None]))  # [m, 2]: (pair, column).
        return (
            queries_kept.write(r, tf.gather(query, above[:, 0])),
            logits_kept.write(r, tf.gather_nd(x, above)),
            rows_kept.write(r, tf.gather_nd(rows, above)),
        )

    def kept(dtype):
        return tf.TensorArray(dtype, size=rounds, infer_shape=False, element_shape=[None])

    query, x, row = over_blocks(gather_round, (kept(tf.int64), kept(tf.float32), kept(tf.int32)), rounds)
    query, x, row = query.concat(), x.concat(), row.concat()
    tau = _segment_threshold(norm, query, x, batch)  # [B], float64.
    excess = tf.cast(x, tf.float64) - tf.gather(tau, query)
    weighted, mass = _support_sums(norm, query, excess, row, db)
    top_excess = norm.shifted(top_values) - tf.cast(tau[:, None], tf.float32)
    return weighted, mass, norm.weights_of(tf.maximum(top_excess, 0.0)), top_rows, top_values


def _by_passes(norm, db, top_k, shift, lower):
    """Passes over the blocks that raise the threshold from the lower bound to the exact
    one, then one pass for the weighted sums and the top prototypes."""

    def sums_above(threshold):
        def step(i, count, s1, s2):
            x = norm.shifted(db.block_logits(i)[0] - shift)
            over = x > threshold
            count += tf.reduce_sum(tf.cast(over, tf.float32), axis=1, keepdims=True)
            s1 += tf.reduce_sum(tf.where(over, x, 0.0), axis=1, keepdims=True)
            if norm.needs_squares:
                s2 += tf.reduce_sum(tf.where(over, x * x, 0.0), axis=1, keepdims=True)
            return count, s1, s2

        zeros = tf.zeros_like(threshold)
        return over_blocks(step, (zeros, zeros, zeros), db.blocks)

    tau = _raise_threshold(norm, lower, sums_above)

    def accumulate(i, weighted, mass, best_values, best_rows):
        logits, start, end = db.block_logits(i)
        logits -= shift
        weights = norm.weights_of(tf.maximum(norm.shifted(logits) - tau, 0.0))
        weighted += tf.matmul(weights, db.values[start:end])
        mass += tf.matmul(weights, tf.one_hot(db.labels[start:end], db.num_classes))
        best_values, best_rows, _ = running_top(best_values, best_rows, logits, lambda columns: columns + start, top_k)
        return weighted, mass, best_values, best_rows

    initial = (
        tf.zeros([db.batch, db.value_size]),
        tf.zeros([db.batch, db.num_classes]),
        *empty_top(db.batch, top_k),
    )
    weighted, mass, best_values, best_rows = over_blocks(accumulate, initial, db.blocks)
    top_weights = norm.weights_of(tf.maximum(norm.shifted(best_values) - tau, 0.0))
    return weighted, mass, top_weights, best_rows, best_values


def _raise_threshold(norm, tau, sums_above):
    """The exact threshold from a lower bound `tau [B, 1]` by `norm.pass_step` over
    `sums_above(tau) -> (count, s1, s2)` (`[B, 1]` each, from a pass over the blocks),
    until it stops rising (the entries above stop changing; in practice a few passes)."""

    def iterate(n, threshold, done):
        count, s1, s2 = sums_above(threshold)
        raised = tf.maximum(threshold, tf.cast(norm.pass_step(threshold, count, s1, s2), threshold.dtype))
        raised.set_shape(threshold.shape)  # Keeps the loop's shape where the batch is static.
        return n + 1, raised, tf.reduce_all(raised == threshold)

    _, tau, _ = tf.while_loop(
        lambda n, threshold, done: tf.logical_not(done),
        iterate,
        (tf.constant(0), tau, tf.constant(False)),
        maximum_iterations=_PASSES,
    )
    return tau


def _segment_threshold(norm, query, x, batch):
    """The threshold `[B]` (float64) of each query's entries in flat lists (`query` int64
    in [0, B), `x`), which must hold the query's whole support: the entries sorted by
    query, then descending, and the prefix rules run within each query's run
    (cumulative sums restarted at its start)."""
    order = tf.argsort(x, direction="DESCENDING", stable=True)
    order = tf.gather(order, tf.argsort(tf.gather(query, order), stable=True))
    query, z = tf.gather(query, order), tf.cast(tf.gather(x, order), tf.float64)
    counts = tf.math.bincount(tf.cast(query, tf.int32), minlength=batch, maxlength=batch)
    starts = tf.cumsum(counts, exclusive=True)
    start = tf.gather(starts, query)
    rank = tf.cast(tf.range(tf.shape(z)[0]) - start + 1, tf.float64)

    def within(terms):  # The cumulative sum from the run's start.
        running = tf.cumsum(terms)
        return running - tf.gather(running - terms, start)

    # x is at most a rounding above 0, so the float64 sums stay exact to far below
    # float32's rounding.
    c1 = within(z)
    c2 = within(z * z) if norm.needs_squares else None
    tau_k = norm.prefix_thresholds(rank, c1, c2)
    in_support = norm.prefix_in_support(rank, z, c1, tau_k)
    size = tf.math.unsorted_segment_sum(tf.cast(in_support, tf.int32), query, batch)
    tau = tf.gather(tau_k, tf.minimum(starts + tf.maximum(size - 1, 0), tf.shape(z)[0] - 1))
    return tf.where(size > 0, tau, float("inf"))


def _support_sums(norm, query, excess, row, db):
    """The weighted values `[B, d_v]` and per-class weights `[B, C]` from flat lists of
    entries (`query`, `excess` = x - tau, database `row`) that hold every entry of each
    query's support."""
    # In float64: a segment sum adds its terms one after another, and over a support of
    # thousands of entries float32 would lose digits the dense path keeps.
    in_support = excess > 0
    query, row = tf.boolean_mask(query, in_support), tf.boolean_mask(row, in_support)
    weight = norm.weights_of(tf.boolean_mask(excess, in_support))
    terms = weight[:, None] * tf.cast(tf.gather(db.values, row), tf.float64)
    weighted = tf.math.unsorted_segment_sum(terms, query, db.batch)
    by_class = query * db.num_classes + tf.cast(tf.gather(db.labels, row), tf.int64)
    mass = tf.math.unsorted_segment_sum(weight, by_class, db.batch * db.num_classes)
    return tf.cast(weighted, tf.float32), tf.cast(tf.reshape(mass, [db.batch, db.num_classes]), tf.float32)
