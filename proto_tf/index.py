"""PrototypeIndex: the prototype database a model attends over at inference, and the
search over it, dense or streamed by its size."""

from typing import Callable, Iterable

import numpy as np
import tensorflow as tf

from proto_tf import blockwise, metrics, normalizations, streaming
from proto_tf.attention import PrototypeAttention
from proto_tf.errors import DataError
from proto_tf.streaming import KEY_DTYPES

# Above this many prototypes the index is searched in blocks (`streaming`): memory stays
# the database plus one `[B, 65536]` block, whatever D.
DEFAULT_STREAM_ABOVE = 32768


class PrototypeIndex:
    """Encoded candidates used at inference: keys `[D, d_att]`, values `[D, d_val]`,
    labels `[D]`, and each candidate's index in its source (the training split's
    examples, or a database file's rows; by default its position), and the search over
    them (`search`: dense attention up to `stream_above` rows, streamed in blocks above).

    The one database object of the project: the model attends over it, evaluation
    sets it, and a SavedModel stores it once, as these variables. They have a free
    first dimension and a new database is assigned into them: every function traced
    before (Keras' `predict` and `evaluate` functions, a user's `tf.function`) reads
    the current database, never a copy captured when it was traced.

    `key_dtype` (one of `KEY_DTYPES`) is the dtype the keys are stored in.
    `stream_above`: above this many rows `search` never makes a `[B, D]` tensor: it
    reads the database in blocks and answers with the top prototypes instead of every
    weight.
    `coverage`: where this database is a shard of a larger one (`--shard`), its rows
    there and the larger one's size, `(first, last + 1, size)` (None: it is whole); a
    shard's answers report it.
    """

    def __init__(
        self,
        keys: tf.Tensor,
        values: tf.Tensor,
        labels: tf.Tensor,
        indices: tf.Tensor | None = None,
        key_dtype: str = "float32",
        stream_above: int = DEFAULT_STREAM_ABOVE,
    ):
        if key_dtype not in KEY_DTYPES:
            raise ValueError(f"key_dtype must be one of {', '.join(KEY_DTYPES)}; got {key_dtype!r}.")
        # A plain object, not a tracked module: training checkpoints hold the model's
        # weights only (an export captures these variables, and stores them once).
        with tf.init_scope():  # Variables, even when set inside a traced function.
            self.keys = _free_rows_variable(tf.cast(keys, key_dtype), "database_keys")
            self.values = _free_rows_variable(values, "database_values")
            self.labels = _free_rows_variable(labels, "database_labels")
            self.index_variable = _free_rows_variable(_indices_or_positions(indices, labels), "database_indices")
        self.coverage = None
        self.stream_above = int(stream_above)
        self._rows = int(tf.convert_to_tensor(labels).shape[0])  # Static: the rows given.

    def assign(self, keys: tf.Tensor, values: tf.Tensor, labels: tf.Tensor, indices: tf.Tensor | None = None) -> None:
        """Replaces the database (any number of rows)."""
        self.keys.assign(tf.cast(keys, self.keys.dtype))
        self.values.assign(tf.cast(values, self.values.dtype))
        self.labels.assign(labels)
        self.index_variable.assign(_indices_or_positions(indices, labels))
        self._rows = int(tf.convert_to_tensor(labels).shape[0])

    @property
    def key_dtype(self) -> str:
        """The dtype the keys are stored in (one of `KEY_DTYPES`)."""
        return self.keys.dtype.name

    @property
    def indices(self) -> tf.Variable:
        """Each prototype's index in its source (int64 `[D]`)."""
        return self.index_variable

    @indices.setter
    def indices(self, indices: tf.Tensor | None) -> None:
        self.index_variable.assign(_indices_or_positions(indices, self.labels))

    def static_tensors(self) -> tuple:
        """`(keys, values, labels, indices)` read inside a traced function with the
        current number of rows as their static size (the variables' is free): an
        exported function knows D, as sparsemax's fast path and a top-k need."""
        size = len(self)
        return tuple(
            tf.ensure_shape(tf.convert_to_tensor(v), [size, *v.shape[1:]])
            for v in (self.keys, self.values, self.labels, self.index_variable)
        )

    def tensors(self) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """`(keys, values, labels)` as tensors of the current static shape: functions
        given these know D when traced (sparsemax's fast path for known widths)."""
        return self.static_tensors()[:3]

    def __len__(self):
        return self._rows

    def streams(self, stream_above: int | None = None) -> bool:
        """Whether `search` reads the database in blocks: more rows than `stream_above`
        (default the index's own)."""
        return len(self) > (self.stream_above if stream_above is None else stream_above)

    def search(
        self,
        queries: tf.Tensor,
        attention: PrototypeAttention,
        num_classes: int,
        top_k: int | None = None,
        stream_above: int | None = None,
        static: bool = False,
        block_size: int = streaming.DEFAULT_BLOCK_SIZE,
    ) -> dict[str, tf.Tensor]:
        """The attention of `queries [B, d_att]` over the index with `attention`'s
        normalisation: `weighted_values [B, d_val]` and `confidence [B]` (Eq. 3), and

        - up to `stream_above` rows (dense): `weights [B, D]`, and with `top_k` the top
          prototypes `top_weights [B, k]` and their rows `top_rows [B, k]`;
        - above (streamed, never a `[B, D]` tensor): `top_weights` and `top_rows` of the
          `top_k` (default 5) prototypes, no `weights`.

        `static` reads the database with its current size known when traced (exports; a
        function traced so must not see another size), else as the variables are, so
        functions traced before a new database read it."""
        if static:
            keys, values, labels, _ = self.static_tensors()
        else:
            keys, values, labels = self.keys, self.values, self.labels
        if self.streams(stream_above):
            k = min(top_k or 5, len(self))
            return streamed_answer(queries, attention.normalization, keys, values, labels, num_classes, k, block_size)
        answer = dense_answer(queries, attention, keys, values, labels, num_classes)
        if top_k:
            # Block-wise: a selection over every weight would cost more than the
            # attention itself over many prototypes.
            answer["top_weights"], answer["top_rows"] = blockwise.top_k(answer["weights"], min(top_k, len(self)))
        return answer


def dense_answer(
    queries: tf.Tensor,
    attention: PrototypeAttention,
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: tf.Tensor,
    num_classes: int,
) -> dict[str, tf.Tensor]:
    """The attention of `queries` over a database held whole: `weighted_values`, every
    weight `weights [B, D]` and `confidence [B]` (Eq. 3)."""
    weighted_values, weights = attention(queries, keys, values)
    return {
        "weighted_values": weighted_values,
        "weights": weights,
        "confidence": metrics.confidence(weights, labels, num_classes),
    }


def streamed_answer(
    queries: tf.Tensor,
    normalization: str,
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: tf.Tensor,
    num_classes: int,
    top_k: int,
    block_size: int = streaming.DEFAULT_BLOCK_SIZE,
) -> dict[str, tf.Tensor]:
    """The attention of `queries` over a database read in blocks of `block_size` rows
    (`streaming.streamed_attention`, never a `[B, D]` tensor): `weighted_values`,
    `confidence` and the `top_k` prototypes, `top_weights [B, k]` and `top_rows [B, k]`."""
    out = streaming.streamed_attention(queries, keys, values, labels, normalization, num_classes, top_k, block_size)
    return {name: out[name] for name in ("weighted_values", "confidence", "top_weights", "top_rows")}


def shard_answer(
    queries: tf.Tensor,
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: tf.Tensor,
    indices: tf.Tensor,
    normalization: "normalizations.Normalization",
    decision: Callable,
    num_classes: int,
    entries: int,
    block_size: int = streaming.DEFAULT_BLOCK_SIZE,
    coverage: tuple[int, int, int] | None = None,
) -> dict[str, tf.Tensor]:
    """What a shard of a database (keys, values, labels and each row's `indices` in the
    whole database) answers for `queries`, for `serving.sharding.merge_answers`: its
    `entries` entries of largest logit, `entry_decision [B, S, C]` (each one's decision
    logits, `decision(vectors)`), `entry_labels`, `entry_indices`, and the
    normalisation's part (`Normalization.shard_entries`: `entry_logits` and what its
    merge needs). Every answer says which rows of the whole database the shard holds,
    `shard_rows [B, 2]` (first, last + 1), and the whole's size, `database_rows [B]`
    (from `coverage`, `(first, last + 1, size)`; default: the shard is the whole), so
    that a router refuses a duplicated or a missing shard."""
    rows_held = int(keys.shape[0])
    k = min(int(entries), rows_held)
    out = streaming.streamed_attention(queries, keys, values, labels, normalization.name, num_classes, k, block_size)
    rows = out["top_rows"]
    first, last, size = coverage or (0, rows_held, rows_held)
    batch = tf.shape(queries)[:1]
    answer = {
        "entry_decision": decision(tf.gather(values, rows)),
        "entry_labels": tf.gather(labels, rows),
        "entry_indices": tf.gather(indices, rows),
        "shard_rows": tf.broadcast_to(tf.constant([first, last], tf.int64), tf.concat([batch, [2]], 0)),
        "database_rows": tf.fill(batch, tf.constant(size, tf.int64)),
    }
    answer.update(normalization.shard_entries(out, k, rows_held, decision))
    return answer


def checked_database(
    keys: tf.Tensor,
    values: tf.Tensor,
    labels: "np.ndarray | tf.Tensor",
    indices: "np.ndarray | tf.Tensor | None",
    attention_size: int,
    value_size: int,
    num_classes: int,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """`(keys, values, labels, indices)` as tensors for a model of `attention_size` keys
    and `value_size` values: a ValueError for widths or row counts that do not fit (a
    programming error), a DataError for contents that would answer wrongly
    (`check_database`)."""
    keys = tf.convert_to_tensor(keys)
    values = tf.convert_to_tensor(values)
    labels = class_ids(labels)
    widths = {"keys": (keys, attention_size, "attention_size"), "values": (values, value_size, "value_size")}
    for name, (tensor, width, field) in widths.items():
        if tensor.shape.rank != 2 or tensor.shape[1] != width:
            raise ValueError(
                f"Database {name} must be [rows, {width}] for this model ({field}={width}); got {tensor.shape}."
            )
    sizes = {keys.shape[0], values.shape[0], labels.shape[0]}
    if indices is not None:
        indices = tf.cast(tf.convert_to_tensor(indices), tf.int64)
        sizes.add(indices.shape[0])
    if len(sizes) != 1:
        raise ValueError(
            "Database keys, values, labels (and indices) need one row per candidate, "
            f"got keys {keys.shape}, values {values.shape}, labels {labels.shape}"
            + (f", indices {indices.shape}." if indices is not None else ".")
        )
    check_database(keys, values, labels, num_classes)
    return keys, values, labels, indices


def concatenated(encoded_batches: Iterable[tuple]) -> tuple[tf.Tensor, ...]:
    """Each tensor of the encoded batches' tuples concatenated over the batches (a
    database's keys and values, and what else the encoding returns); a DataError when
    there is no batch."""
    parts = None
    for encoded in encoded_batches:
        parts = parts or [[] for _ in encoded]
        for part, tensor in zip(parts, encoded):
            part.append(tensor)
    if parts is None:
        raise DataError("the prototype database is empty: give at least one candidate.")
    return tuple(tf.concat(part, axis=0) for part in parts)


# The entries of a `.keras` file's store that hold a model's database.
_STORE_ENTRIES = ("database_keys", "database_values", "database_labels", "database_indices")


def save_to_store(index: PrototypeIndex, store: dict) -> None:
    """Writes `index` into a Keras saving store (`save_own_variables`)."""
    for name, value in zip(_STORE_ENTRIES, index.static_tensors()):
        store[name] = value.numpy()


def arrays_from_store(store: dict) -> dict | None:
    """The database a Keras saving store holds, as `set_database` arguments (keys,
    values, labels, indices, key_dtype), or None when it holds none."""
    entries = set(store.keys())
    if "database_keys" not in entries:
        return None
    keys, values, labels = (np.asarray(store[name]) for name in _STORE_ENTRIES[:3])
    indices = np.asarray(store["database_indices"]) if "database_indices" in entries else None
    key_dtype = keys.dtype.name if keys.dtype.name in KEY_DTYPES else "float32"
    return {"keys": keys, "values": values, "labels": labels, "indices": indices, "key_dtype": key_dtype}


def _indices_or_positions(indices, labels):
    if indices is None:
        return tf.range(tf.shape(labels)[0], dtype=tf.int64)
    return tf.cast(tf.convert_to_tensor(indices), tf.int64)


def _free_rows_variable(value, name):
    value = tf.convert_to_tensor(value)
    return tf.Variable(value, shape=tf.TensorShape([None]).concatenate(value.shape[1:]), trainable=False, name=name)


def _rows(mask, limit=5):
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(row) for row in rows[:limit])
    return f"row{'s' if rows.size > 1 else ''} {shown}{', ...' if rows.size > limit else ''} ({rows.size} in all)"


def class_ids(labels: "np.ndarray | tf.Tensor") -> tf.Tensor:
    """int32 class ids of `labels`; a DataError for labels that are not whole numbers
    (a cast would have made 2.7 class 2)."""
    array = np.asarray(labels)
    if np.issubdtype(array.dtype, np.floating):
        bad = array != np.round(array)
        if bad.any():
            raise DataError(
                f"prototype database labels must be whole class ids; {_rows(bad)} hold "
                f"{sorted(set(array[bad].tolist()))[:5]}."
            )
    return tf.cast(tf.convert_to_tensor(array), tf.int32)


def check_database(keys: tf.Tensor, values: tf.Tensor, labels: "np.ndarray | tf.Tensor", num_classes: int) -> None:
    """A DataError for a database that would answer wrongly: no rows, labels outside
    [0, num_classes) (every confidence would be 0), NaN or infinite keys or values."""
    if keys.shape[0] == 0:
        raise DataError("the prototype database is empty: give at least one candidate.")
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise DataError(
            f"prototype database labels must be class ids in 0..{num_classes - 1}; "
            f"{_rows(bad)} hold{'s' if bad.sum() == 1 else ''} {sorted(set(labels[bad].tolist()))[:5]}."
        )
    for name, array in (("keys", keys), ("values", values)):
        array = np.asarray(array, np.float32).reshape(array.shape[0], -1)
        bad = ~np.isfinite(array).all(axis=1)
        if bad.any():
            raise DataError(f"prototype database {name} hold NaN or infinite numbers in {_rows(bad)}.")


# The name of the index before it searched itself; exports and code written then use it.
PrototypeDatabase = PrototypeIndex
