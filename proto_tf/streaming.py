"""Exact attention over a large database in blocks, never holding `[B, D]`.

`streamed_attention` reads the database's keys block by block inside one graph (standard
TF ops, a `tf.while_loop`), keeping per query only running statistics of fixed size, so
memory is the database plus one `[B, block_size]` block whatever D is (sparsemax adds
its chunk maxima, at most `[B, 131072]`):

- softmax: the running maximum logit m, the sum of exp(logit - m), the same sums weighted
  by the values and by the one-hot labels (rescaled by exp(m_old - m_new) when m grows),
  and the top-k logits: one pass, exact. Each block's own softmax is one fused kernel.
- sparsemax: one pass keeps the maximum logit of every chunk of 64-128 keys (`chunk_size`).
  The threshold of the largest of those maxima is a lower bound of each row's threshold
  (a subset's threshold is at most the row's), so every entry above it, and the whole
  support, lies in the chunks whose maximum passes it. Those (query, chunk) pairs are
  gathered for the whole batch in rounds (a few chunks per query on random keys; a few
  hundred on trained ones, where a support of a few hundred entries is spread over as
  many chunks), and only their entries above the bound are kept; a sort of those within
  each query gives the exact threshold, and the sums read only the support's entries.
  A batch that would gather more than `gather_fraction` of the database per query on
  average, or more than `MAX_GATHERED_KEYS` keys (e.g. flat rows, whose support is
  everything), runs Michelot's iteration as passes over the blocks instead, then one
  more pass for the sums.

Sums are accumulated in another order than the dense path's, so results agree with it to
float32 rounding (not bit for bit); the top prototypes are the same.
"""

import math

import tensorflow as tf

from proto_tf import blockwise
from proto_tf.sparsemax import threshold_from_sorted

DEFAULT_BLOCK_SIZE = 65536  # Rows of keys per block: a [128, 65536] block is 32 MB.
# Sparsemax: keys per chunk, the unit whose maximum the scan keeps. Smaller chunks gather
# fewer keys around a scattered support but cost the scan more (a maximum over fewer
# keys per chunk): at 1M x 128, 64 was the fastest on trained keys, and close to 128 on
# random ones. Chunks grow to 128 keys so that a query keeps at most
# `MAX_CHUNK_MAXIMA` (64 MB of maxima at batch 128), and are 128 where D is not static.
CHUNK_SIZE = 128
MIN_CHUNK_SIZE = 64
MAX_CHUNK_MAXIMA = 131072
ROUND_KEY_BYTES = 1 << 26  # Sparsemax: bytes of keys (as float32) gathered in one round of candidate chunks.
# Sparsemax: the most keys gathered for one batch; past it (a quarter of 16M prototypes
# for a batch of 16) the kept entries and their sort would need gigabytes, and Michelot's
# passes, which hold nothing per entry, run instead.
MAX_GATHERED_KEYS = 1 << 26
# Sparsemax: the largest share of the database gathered per query, on average over the
# batch. A gathered logit costs
# about 20 scanned ones, and Michelot's passes read the database 3-6 times, so past a
# quarter the passes are cheaper (flat rows, whose support is everything).
DEFAULT_GATHER_FRACTION = 0.25
_BOUND_MAXIMA = 256  # Sparsemax: chunk maxima whose threshold gives the lower bound.
_MICHELOT_PASSES = 64
# Dtypes a database may store its keys in. float32 by default; float16 or bfloat16 halve
# the keys' memory, and attention still computes in float32 (keys are cast as read).
KEY_DTYPES = ("float32", "float16", "bfloat16")


def streamed_attention(
    queries: tf.Tensor,
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: tf.Tensor,
    normalization: str,
    num_classes: int,
    top_k: int = 5,
    block_size: int = DEFAULT_BLOCK_SIZE,
    gather_fraction: float = DEFAULT_GATHER_FRACTION,
) -> dict:
    """Attention of `queries [B, d]` over `keys [D, d]`, `values [D, d_v]`, `labels [D]`
    (logits q k^T / sqrt(d), softmax or sparsemax), without a `[B, D]` tensor.

    Returns `weighted_values [B, d_v]`, `confidence [B]` (Eq. 3) and the `top_k`
    prototypes: `top_weights [B, k]` (descending) and `top_rows [B, k]` (int32 rows of
    the database; entries past a sparse support have weight 0) and `top_logits [B, k]`
    (their logits q . k / sqrt(d)). Softmax also returns its
    sums before normalisation: `max_logit [B]` (m), `sum_exp [B]` (of exp(logit - m)),
    `weighted_sum [B, d_v]` and `class_mass [B, C]` (the same sums times the values and
    the one-hot labels).
    """
    queries, keys, blocks, block_rows = _blocked(queries, keys, block_size)
    values, labels = tf.convert_to_tensor(values, tf.float32), tf.cast(labels, tf.int32)

    def block_logits(i):
        start, end = block_rows(i)
        return tf.matmul(queries, _as_float32(keys[start:end]), transpose_b=True), start, end

    if normalization == "softmax":
        return _softmax(queries, values, labels, num_classes, top_k, blocks, block_logits)
    if normalization == "sparsemax":
        return _sparsemax(
            queries,
            keys,
            values,
            labels,
            num_classes,
            top_k,
            gather_fraction,
            blocks,
            block_size,
            block_logits,
        )
    raise ValueError(f"normalization must be softmax or sparsemax; got {normalization!r}.")


def key_scan(
    queries: tf.Tensor, keys: tf.Tensor, block_size: int = DEFAULT_BLOCK_SIZE, keys_first: bool = False
) -> tf.Tensor:
    """Each query's largest logit `q . k / sqrt(d)` over `keys`, by blocks of rows: one
    read of the keys and nothing else, the floor of any exact attention (benchmarks).
    `keys_first` computes each block as `k q^T` instead of `q k^T`."""
    queries, keys, blocks, block_rows = _blocked(queries, keys, block_size)

    def step(i, best):
        start, end = block_rows(i)
        block = _as_float32(keys[start:end])
        if keys_first:
            block_max = tf.reduce_max(tf.matmul(block, queries, transpose_b=True), axis=0)
        else:
            block_max = tf.reduce_max(tf.matmul(queries, block, transpose_b=True), axis=1)
        return (tf.maximum(best, block_max),)

    initial = (tf.fill([tf.shape(queries)[0]], -float("inf")),)
    return _over_blocks(step, initial, blocks)[0]


def chunk_size(database_size: int | None, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """Keys per chunk of sparsemax's scan for a database of `database_size` rows (None:
    not known when the graph is built): the smaller of 64 and 128 that keeps at most
    `MAX_CHUNK_MAXIMA` chunk maxima per query, and no more than a block."""
    chunk = CHUNK_SIZE if database_size is None else MIN_CHUNK_SIZE
    while chunk < CHUNK_SIZE and database_size > chunk * MAX_CHUNK_MAXIMA:
        chunk *= 2
    return min(chunk, block_size)


def _blocked(queries, keys, block_size):
    """`(queries / sqrt(d) in float32, keys, number of blocks, block_rows)`, where
    `block_rows(i)` is block i's `(start, end)` rows of the keys. Keys stay in their
    stored dtype (float32, or float16/bfloat16 to halve the database): each block is
    cast to float32 as it is read, so products and sums accumulate in float32."""
    queries = tf.convert_to_tensor(queries, tf.float32) / math.sqrt(int(queries.shape[-1]))
    keys = tf.convert_to_tensor(keys)
    if keys.dtype.name not in KEY_DTYPES:
        keys = tf.cast(keys, tf.float32)
    size = tf.shape(keys)[0]

    def block_rows(i):
        start = i * block_size
        return start, tf.minimum(start + block_size, size)

    return queries, keys, (size + block_size - 1) // block_size, block_rows


def _as_float32(keys):
    return keys if keys.dtype == tf.float32 else tf.cast(keys, tf.float32)


def _running_top(top_values, top_rows, logits, rows_of, k):
    """The `k` largest of the running top and of `logits [B, n]`, with their database
    rows, and the top of `logits` alone (`(values, columns)`, descending, at most k):
    `rows_of(columns)` maps columns of `logits` to rows (a block's start added, or the
    rows a gathered round read)."""
    # Exact, from the logits' largest chunk maxima: a selection over a few chunks, not
    # over the whole row (entries past a short row are -inf, never chosen over a
    # database's own rows; their columns are clamped to the row).
    values, columns = blockwise.top_k(logits, tf.minimum(k, tf.shape(logits)[1]))
    columns = tf.minimum(columns, tf.shape(logits)[1] - 1)
    best = tf.math.top_k(tf.concat([top_values, values], axis=1), k)
    merged_rows = tf.concat([top_rows, rows_of(columns)], axis=1)
    return best.values, tf.gather(merged_rows, best.indices, batch_dims=1), (values, columns)


def _over_blocks(step, state, blocks):
    """`state` after `step(i, *state) -> state` for each block i = 0 .. blocks - 1, in
    one `tf.while_loop`."""
    return tf.while_loop(
        lambda i, *_: i < blocks,
        lambda i, *rest: (i + 1, *step(i, *rest)),
        (tf.constant(0), *state),
        maximum_iterations=blocks,
    )[1:]


def _empty_top(batch, k):
    return tf.fill([batch, k], -float("inf")), tf.fill([batch, k], tf.constant(0, tf.int32))


def _softmax(queries, values, labels, num_classes, top_k, blocks, block_logits):
    batch = tf.shape(queries)[0]

    def step(i, peak, total, weighted, mass, top_values, top_rows):
        logits, start, end = block_logits(i)
        top_values, top_rows, (block_top, columns) = _running_top(
            top_values, top_rows, logits, lambda columns: columns + start, top_k
        )
        # The block's own softmax is one fused kernel (maximum, exponentials, sum; faster
        # than those as separate ops); the block's sum of exp(l - max) is 1 / its weight
        # at the block's largest logit, the first of the block's top.
        block_max, block_argmax = block_top[:, 0], columns[:, 0]
        normalized = tf.nn.softmax(logits)
        block_total = 1.0 / tf.gather(normalized, block_argmax, batch_dims=1)
        new_peak = tf.maximum(peak, block_max)
        rescale = tf.exp(peak - new_peak)  # exp(-inf) = 0 before the first block.
        block_scale = block_total * tf.exp(block_max - new_peak)
        one_hot = tf.one_hot(labels[start:end], num_classes)
        total = total * rescale + block_scale
        weighted = weighted * rescale[:, None] + tf.matmul(normalized, values[start:end]) * block_scale[:, None]
        mass = mass * rescale[:, None] + tf.matmul(normalized, one_hot) * block_scale[:, None]
        return new_peak, total, weighted, mass, top_values, top_rows

    initial = (
        tf.fill([batch], -float("inf")),
        tf.zeros([batch]),
        tf.zeros([batch, values.shape[-1] or tf.shape(values)[-1]]),
        tf.zeros([batch, num_classes]),
        *_empty_top(batch, top_k),
    )
    peak, total, weighted, mass, top_values, top_rows = _over_blocks(step, initial, blocks)
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


def _sparsemax(queries, keys, values, labels, num_classes, top_k, gather_fraction, blocks, block_size, block_logits):
    batch = tf.shape(queries)[0]
    size = tf.shape(keys)[0]
    chunk = chunk_size(keys.shape[0], block_size)
    per_block = -(-block_size // chunk)

    # 1. One scan: the maximum logit of every chunk of `chunk` consecutive keys.
    def scan(i, maxima):
        _, chunk_max = blockwise.block_maxima(block_logits(i)[0], chunk)
        padding = [[0, 0], [0, per_block - tf.shape(chunk_max)[1]]]  # The last block's missing chunks.
        return (maxima.write(i, tf.pad(chunk_max, padding, constant_values=-float("inf"))),)

    (maxima,) = _over_blocks(scan, (tf.TensorArray(tf.float32, size=blocks, element_shape=[None, per_block]),), blocks)
    chunk_maxima = tf.reshape(tf.transpose(maxima.stack(), [1, 0, 2]), [batch, -1])  # [B, chunks]
    # 2. A lower bound of the threshold: the threshold of a subset of a row (its chunk
    # maxima) is at most the row's. Only chunks whose maximum passes it can hold
    # support entries.
    shift = tf.reduce_max(chunk_maxima, axis=1, keepdims=True)
    best_maxima = tf.math.top_k(chunk_maxima, tf.minimum(_BOUND_MAXIMA, tf.shape(chunk_maxima)[1])).values
    # From here on logits are less the row maximum: a threshold near large logits keeps
    # its precision (l - shift is exact near the top), so the weights l - tau do too.
    lower = threshold_from_sorted(best_maxima - shift, 0.0)
    candidates = chunk_maxima - shift > lower
    needed = tf.reduce_sum(tf.cast(candidates, tf.int64))  # Candidate chunks of the whole batch.

    def chunk_rows(ids):
        """Rows of the database in chunks `ids` (`[..., chunk]`, 0 where not a row) and
        whether they are rows (the last block's chunks may pass its end)."""
        offsets = (ids % per_block)[..., None] * chunk + tf.range(chunk)  # In the block.
        rows = (ids // per_block)[..., None] * block_size + offsets
        valid = (offsets < block_size) & (rows < size)
        return tf.where(valid, rows, 0), valid

    # 3. The candidate chunks hold every entry above the lower bound, so the whole
    # support: their keys are gathered, `ROUND_KEY_BYTES` per round, and only their
    # entries above the bound are kept, as flat (query, logit, row) lists: a few hundred
    # per query. Their threshold, by a sort within each query, is the row's (exact: the
    # entries below the bound are never in the support); the sums read only the
    # support. Trained keys spread a support of a few hundred entries over as many
    # chunks; a batch that would gather more than `gather_fraction` of the database per
    # query on average, or more than `MAX_GATHERED_KEYS` in all (flat rows), runs
    # Michelot's passes over the whole database instead.
    def from_chunks():
        # The top prototypes lie in the top_k chunks of largest maxima (each of those
        # maxima is at least every entry of the other chunks): a small gather of its own.
        top_chunks = tf.math.top_k(chunk_maxima, tf.minimum(top_k, tf.shape(chunk_maxima)[1])).indices
        rows, valid = chunk_rows(top_chunks)  # [B, k, chunk]
        rows, valid = tf.reshape(rows, [batch, -1]), tf.reshape(valid, [batch, -1])
        logits = tf.einsum("bd,bnd->bn", queries, _as_float32(tf.gather(keys, rows))) - shift
        top_values, top_rows, _ = _running_top(
            *_empty_top(batch, top_k),
            tf.where(valid, logits, -float("inf")),
            lambda columns: tf.gather(rows, columns, batch_dims=1),
            top_k,
        )
        # The candidates as flat (query, chunk) pairs, gathered in rounds of
        # `ROUND_KEY_BYTES` of keys: a batch gathers the sum of its queries' candidates,
        # not the batch size times the widest query's.
        pairs = tf.where(candidates)
        width = max(ROUND_KEY_BYTES // (chunk * 4 * int(queries.shape[-1])), 1)
        rounds = (tf.shape(pairs, out_type=tf.int32)[0] + width - 1) // width
        query_shift, query_lower = shift[:, 0], lower[:, 0]
        # Kept down to the bound less a margin: the scan's products and these may round
        # apart, and an entry the bound let through by a rounding must still be sorted
        # with the rest.
        query_bound = query_lower - 1e-5 * (1.0 + tf.abs(query_shift))

        def gather_round(r, queries_kept, logits_kept, rows_kept):
            query, chosen = pairs[r * width : (r + 1) * width, 0], pairs[r * width : (r + 1) * width, 1]
            rows, valid = chunk_rows(tf.cast(chosen, tf.int32))  # [n, chunk]
            logits = tf.einsum("nd,ncd->nc", tf.gather(queries, query), _as_float32(tf.gather(keys, rows)))
            logits -= tf.gather(query_shift, query)[:, None]
            above = tf.where(valid & (logits > tf.gather(query_bound, query)[:, None]))  # [m, 2]: (pair, column).
            return (
                queries_kept.write(r, tf.gather(query, above[:, 0])),
                logits_kept.write(r, tf.gather_nd(logits, above)),
                rows_kept.write(r, tf.gather_nd(rows, above)),
            )

        def kept(dtype):
            return tf.TensorArray(dtype, size=rounds, infer_shape=False, element_shape=[None])

        query, logit, row = _over_blocks(gather_round, (kept(tf.int64), kept(tf.float32), kept(tf.int32)), rounds)
        query, logit, row = query.concat(), logit.concat(), row.concat()

        tau = _segment_threshold(query, logit, batch)  # [B], float64.
        excess = tf.cast(logit, tf.float64) - tf.gather(tau, query)
        weighted, mass = _support_sums(query, excess, row, values, labels, num_classes, batch)
        return weighted, mass, tf.maximum(top_values - tf.cast(tau[:, None], tf.float32), 0.0), top_rows, top_values

    def by_passes():
        # Michelot's passes over the blocks from the lower bound, then one pass for the
        # weighted sums and the top prototypes.
        def sums_above(threshold):
            def step(i, total, count):
                logits = block_logits(i)[0] - shift
                over = logits > threshold
                total += tf.reduce_sum(tf.where(over, logits, 0.0), axis=1, keepdims=True)
                count += tf.reduce_sum(tf.cast(over, tf.float32), axis=1, keepdims=True)
                return total, count

            zeros = tf.zeros_like(threshold)
            return _over_blocks(step, (zeros, zeros), blocks)

        tau = _michelot(lower, sums_above)

        def accumulate(i, weighted, mass, best_values, best_rows):
            logits, start, end = block_logits(i)
            logits -= shift
            weights = tf.maximum(logits - tau, 0.0)
            weighted += tf.matmul(weights, values[start:end])
            mass += tf.matmul(weights, tf.one_hot(labels[start:end], num_classes))
            best_values, best_rows, _ = _running_top(
                best_values, best_rows, logits, lambda columns: columns + start, top_k
            )
            return weighted, mass, best_values, best_rows

        initial = (
            tf.zeros([batch, values.shape[-1] or tf.shape(values)[-1]]),
            tf.zeros([batch, num_classes]),
            *_empty_top(batch, top_k),
        )
        weighted, mass, best_values, best_rows = _over_blocks(accumulate, initial, blocks)
        return weighted, mass, tf.maximum(best_values - tau, 0.0), best_rows, best_values

    # The gathered keys against the keys the passes would read, per pass.
    gathered = tf.cast(needed, tf.float32) / tf.cast(tf.size(chunk_maxima, out_type=tf.int64), tf.float32)
    fits = needed * chunk <= MAX_GATHERED_KEYS
    weighted, mass, top_weights, top_rows, top_shifted = tf.cond(
        (gathered <= gather_fraction) & fits, from_chunks, by_passes
    )
    return {
        "weighted_values": weighted,
        "confidence": tf.minimum(tf.reduce_max(mass, axis=1), 1.0),
        "top_weights": top_weights,
        "top_rows": top_rows,
        "top_logits": top_shifted + shift,
    }


def _segment_threshold(query, logit, batch):
    """Sparsemax's threshold `[B]` (float64) of each query's entries in flat lists
    (`query` int64 in [0, B), `logit`), which must hold the query's whole support: the
    entries sorted by query, then by logit descending, and `threshold_from_sorted`'s
    rule run within each query's run (cumulative sums restarted at its start)."""
    order = tf.argsort(logit, direction="DESCENDING", stable=True)
    order = tf.gather(order, tf.argsort(tf.gather(query, order), stable=True))
    query, z = tf.gather(query, order), tf.cast(tf.gather(logit, order), tf.float64)
    counts = tf.math.bincount(tf.cast(query, tf.int32), minlength=batch, maxlength=batch)
    starts = tf.cumsum(counts, exclusive=True)
    start = tf.gather(starts, query)
    rank = tf.cast(tf.range(tf.shape(z)[0]) - start + 1, tf.float64)
    # Shifted logits are at most a rounding above 0, so the float64 sums stay exact to
    # far below float32's rounding.
    running = tf.cumsum(z)
    within = running - tf.gather(running - z, start)  # The sum from the run's start.
    in_support = rank * z > within - 1.0
    size = tf.math.unsorted_segment_sum(tf.cast(in_support, tf.int32), query, batch)
    at_size = tf.gather(within, tf.minimum(starts + tf.maximum(size - 1, 0), tf.shape(z)[0] - 1))
    tau = (at_size - 1.0) / tf.cast(tf.maximum(size, 1), tf.float64)
    return tf.where(size > 0, tau, float("inf"))


def _support_sums(query, excess, row, values, labels, num_classes, batch):
    """The weighted values `[B, d_v]` and per-class weights `[B, C]` from flat lists of
    entries (`query`, `excess` = logit - tau, database `row`) that hold every entry of
    each query's support."""
    # In float64: a segment sum adds its terms one after another, and over a support of
    # thousands of entries float32 would lose digits the dense path keeps.
    in_support = excess > 0
    query, row = tf.boolean_mask(query, in_support), tf.boolean_mask(row, in_support)
    weight = tf.cast(tf.boolean_mask(excess, in_support), tf.float64)
    terms = weight[:, None] * tf.cast(tf.gather(values, row), tf.float64)
    weighted = tf.math.unsorted_segment_sum(terms, query, batch)
    by_class = query * num_classes + tf.cast(tf.gather(labels, row), tf.int64)
    mass = tf.reshape(tf.math.unsorted_segment_sum(weight, by_class, batch * num_classes), [batch, num_classes])
    return tf.cast(weighted, tf.float32), tf.cast(mass, tf.float32)


def _michelot(tau, sums_above):
    """The exact sparsemax threshold from a lower bound `tau [B, 1]`: tau <- (sum of the
    logits above tau - 1) / their count, from `sums_above(tau) -> (sum, count)` (`[B, 1]`
    each, from a pass over the blocks), until the count stops
    changing (it only falls; in practice a few steps)."""

    def iterate(n, threshold, done):
        total, count = sums_above(threshold)
        step = (total - 1.0) / tf.maximum(count, 1.0)
        raised = tf.maximum(threshold, tf.cast(step, threshold.dtype))
        raised.set_shape(threshold.shape)  # Keeps the loop's shape where the batch is static.
        # Stable once the entries above stop changing: the same sum, the same threshold.
        return n + 1, raised, tf.reduce_all(raised == threshold)

    _, tau, _ = tf.while_loop(
        lambda n, threshold, done: tf.logical_not(done),
        iterate,
        (tf.constant(0), tau, tf.constant(False)),
        maximum_iterations=_MICHELOT_PASSES,
    )
    return tau
