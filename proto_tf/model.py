"""ProtoAttend: an encoder whose decisions are attention-weighted sums of prototypes.

Architecture (Sections 3.2 and 4.1): a shared encoder maps inputs and candidates to
features; dense heads map features to queries and keys (Dense + ReLU) and values
(Dense + ReLU + LayerNorm); PrototypeAttention weighs the candidates' values; a
bias-free dense layer turns a value vector into logits.

Training (Eq. 1 + Eq. 2), per example with label y and candidate weights p:
  L(y, g(v)) + L(y, g(sum_j p_j v_j)) + L(y, g(alpha v + (1 - alpha) sum_j p_j v_j))
  + sparsity_weight * (-sum_j p_j log(p_j + eps)).
"""

import math
from typing import Callable, Iterable

import keras
import tensorflow as tf

from proto_tf import metrics, normalizations, streaming
from proto_tf.attention import PrototypeAttention
from proto_tf.attention_settings import SETTING_NAMES, AttentionSettings
from proto_tf.baseline import BaselineClassifier
from proto_tf.candidate_memory import CandidateMemory
from proto_tf.classifier import Classifier, accuracy, correct
from proto_tf.index import (  # noqa: F401 (PrototypeDatabase, KEY_DTYPES: the names model.py gave)
    DEFAULT_STREAM_ABOVE,
    KEY_DTYPES,
    PrototypeDatabase,
    PrototypeIndex,
    arrays_from_store,
    checked_database,
    concatenated,
    dense_answer,
    save_to_store,
    shard_answer,
    streamed_answer,
)
from proto_tf.losses import protoattend_loss_terms


@keras.saving.register_keras_serializable(package="proto_tf")
class ProtoAttend(Classifier):
    """Attention-based prototypical classifier around any Keras encoder.

    Args:
      encoder: a Keras layer/model mapping a batch of inputs to `[B, features]`.
      num_classes: number of output classes.
      attention: the normalisation's name, `proto_tf.normalizations.names()`: "softmax"
        or "sparsemax" (the paper's), or "entmax15" (1.5-entmax). The paper's "Baseline
        enc." rows, the encoder and decision alone, are `BaselineClassifier`.
      **options: the other fields of `AttentionSettings` (sizes, loss weights, the
        training path's choices; each documented there, each an attribute of the
        model), and Keras' own (`name`, ...).

    Training data for `train_step` is a dict with `inputs [B, ...]`, `labels [B]`,
    `candidate_inputs [D, ...]` and, optionally, `candidate_labels [D]`. Under a
    `tf.distribute` strategy each replica encodes its slice of the candidates and the
    slices are all-gathered, so every query attends over the whole database.

    Example:
      >>> encoder = keras.Sequential([keras.layers.Dense(32, activation="relu")])
      >>> model = ProtoAttend(encoder, num_classes=3, attention="sparsemax")
      >>> model.build((None, 5))
      >>> keys, values = model.encode_database(np.random.rand(100, 5).astype("float32"))
      >>> model.set_database(keys, values, labels=np.arange(100) % 3)
      >>> model(np.random.rand(4, 5).astype("float32"))["confidence"].shape
      TensorShape([4])
    """

    def __init__(self, encoder: keras.layers.Layer, num_classes: int, attention: str = "softmax", **options):
        fields = {name: options.pop(name) for name in SETTING_NAMES if name in options}
        self.settings = AttentionSettings(attention=attention, **fields)  # Validated there.
        super().__init__(encoder, num_classes, **options)  # Sets the encoder: it comes first.
        for name in SETTING_NAMES:
            setattr(self, name, getattr(self.settings, name))
        self.normalization = normalizations.get(self.attention)
        self.database = None

        # === Layers (in the order of `model.weights`, which checkpoints follow) ===
        self.query_head = keras.layers.Dense(self.attention_size, activation="relu", name="query_head")
        self.key_head = keras.layers.Dense(self.attention_size, activation="relu", name="key_head")
        self.value_head = keras.layers.Dense(self.value_size, activation="relu", name="value_head")
        self.value_norm = keras.layers.LayerNormalization(name="value_norm")
        self.prototype_attention = PrototypeAttention(
            self.attention, sparsemax_top_k=self.sparsemax_top_k, name="prototype_attention"
        )
        self.decision = keras.layers.Dense(self.num_classes, use_bias=False, name="decision")

        # === Metrics ===
        self._track_metrics(
            (
                "loss",
                "plain_loss",
                "plain_accuracy",
                "prototype_loss",
                "mixed_loss",
                "sparsity_loss",
                "prototype_accuracy",
                "mean_max_weight",
                "distinct_top_share",
                "top3_weight_share",
            )
            # Eq. 2's weighted term, a part of the loss only with a sparsity weight.
            + (("sparsity_term",) if self.sparsity_weight else ()),
            ("prototype_accuracy", "mean_confidence"),  # `evaluate(x, y)` with the database.
        )

    uses_database = True

    # === Building ===

    def build(self, input_shape: tuple, input_dtype: str = "float32") -> None:
        """Creates every weight by running one zero example through all layers.

        Every layer must exist before an optimizer is built for the model, and
        `call` alone never touches the key head, so the model builds itself here.
        """
        if self.built:
            return
        example = tf.zeros([1] + list(input_shape)[1:], dtype=input_dtype)
        features = self.encoder(example, training=False)
        queries, keys, values = self.heads(features)
        if self.tied_head_init:
            for key_weight, query_weight in zip(self.key_head.weights, self.query_head.weights):
                key_weight.assign(query_weight)
        self.prototype_attention(queries, keys, values)
        self.decision(values)
        if self.candidate_memory:
            self.memory = CandidateMemory(self.candidate_memory, name="candidate_memory")
            self.memory.build(features.shape)
        self.built = True

    # === Forward ===

    def heads(self, features: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Maps encoder outputs `[B, F]` to `(queries, keys, values)`."""
        queries = self._unit(self.query_head(features))
        keys = self._unit(self.key_head(features))
        values = self.value_norm(self.value_head(features))
        return queries, keys, values

    def _unit(self, vectors):
        """With `cosine_scale` s: `vectors` scaled to length sqrt(s * sqrt(d)), so that the
        attention's q . k / sqrt(d) is s times their cosine. Otherwise unchanged."""
        if not self.cosine_scale:
            return vectors
        length = math.sqrt(self.cosine_scale * math.sqrt(self.attention_size))
        return tf.math.l2_normalize(vectors, axis=-1, epsilon=1e-12) * tf.cast(length, vectors.dtype)

    def encode(self, inputs: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Encodes inputs to `(queries, keys, values)`."""
        return self.heads(self.encoder(inputs, training=training))

    def plain_logits(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        """The plain path of Eq. 1: the input's own value through the decision."""
        return self.decision(self.encode(inputs, training=training)[2])

    def encode_database(self, candidate_inputs: tf.Tensor, batch_size: int = 1024) -> tuple[tf.Tensor, tf.Tensor]:
        """Encodes candidates (an array, or a dict of arrays) without augmentation or
        dropout, in batches of `batch_size`: `(keys [D, d_att], values [D, d_val])`."""
        return self.encode_batches(tf.data.Dataset.from_tensor_slices(candidate_inputs).batch(batch_size))

    def encode_batches(self, batches: Iterable, encode: Callable | None = None) -> tuple[tf.Tensor, ...]:
        """Encodes an iterable of model-input batches without augmentation or dropout:
        `(keys [D, d_att], values [D, d_val])`. The one loop that encodes a database
        (evaluation, export, the audit and `encode_database` all come here), one traced
        function for every batch: `encode` (from `key_value_function`) when given, so that
        a caller encoding many databases (validation during training) traces it once.
        Each tensor `encode` returns is concatenated over the batches (the audit's also
        returns the queries)."""
        return concatenated(map(encode or self.key_value_function(), batches))

    def key_value_function(self) -> Callable:
        """A traced `inputs -> (keys, values)` without augmentation or dropout."""
        return tf.function(lambda x: self.encode(x, training=False)[1:], reduce_retracing=True)

    def set_database(
        self,
        keys: tf.Tensor,
        values: tf.Tensor,
        labels: tf.Tensor,
        indices: tf.Tensor | None = None,
        key_dtype: str = "float32",
    ) -> None:
        """Sets the encoded candidate database that `call` attends over, its keys stored
        as `key_dtype` (`KEY_DTYPES`; attention computes in float32 either way)."""
        keys, values, labels, indices = checked_database(
            keys, values, labels, indices, self.attention_size, self.value_size, self.num_classes
        )
        database = self.database
        streamed_before = database is not None and database.streams()
        if database is None or database.keys.shape[1:] != keys.shape[1:] or database.key_dtype != key_dtype:
            self.database = PrototypeIndex(keys, values, labels, indices, key_dtype, self.stream_above)
        else:
            self.database.assign(keys, values, labels, indices)
            self.database.coverage = None
        if database is not None and self.database.streams() != streamed_before:
            # Keras' traced predict/evaluate functions chose the search path of the old
            # size; they are traced again for the new one.
            self.predict_function = self.test_function = None

    def call(self, inputs: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Predicts with the database set by `set_database` (`predict_from_index`).

        Returns a dict: `logits` (from the prototypes), `plain_logits`, `confidence
        [B]` (Eq. 3), and up to `stream_above` prototypes every weight, `weights [B, D]`;
        above it (a database streamed in blocks, never a `[B, D]` tensor) the top 5
        prototypes instead, `top_weights [B, 5]` and their database rows `top_rows`.

        The database is read from variables, so functions traced before a
        `set_database` (Keras' `predict`, a user's `tf.function`) use the new one.
        """
        return self.predict_from_index(inputs, training=training)

    def predict_from_index(
        self,
        inputs: tf.Tensor,
        index: PrototypeIndex | None = None,
        top_k: int | None = None,
        stream_above: int | None = None,
        static: bool = False,
        training: bool = False,
    ) -> dict[str, tf.Tensor]:
        """The inference pass over `index` (default the model's database; see
        `PrototypeIndex.search` for `top_k`, `stream_above` and `static`): `logits`,
        `plain_logits`, `confidence`, and `weights` or the top prototypes."""
        index = index if index is not None else self.database
        if index is None:
            raise ValueError(
                "No prototype database is set: call "
                "model.set_database(*model.encode_database(candidates), labels) first."
            )
        return self._decide(
            inputs,
            lambda queries: index.search(
                queries, self.prototype_attention, self.num_classes, top_k, stream_above, static
            ),
            training,
        )

    def _decide(self, inputs: tf.Tensor, attend: Callable, training: bool) -> dict[str, tf.Tensor]:
        """The one inference pass: inputs encoded, `attend(queries)` (an answer of
        `index.dense_answer` or `index.streamed_answer`), and both paths' decisions."""
        queries, _, input_values = self.heads(self.encoder(inputs, training=training))
        answer = attend(queries)
        weighted_values = tf.cast(answer.pop("weighted_values"), input_values.dtype)
        return {"logits": self.decision(weighted_values), "plain_logits": self.decision(input_values), **answer}

    def predict_with_database(
        self, inputs: tf.Tensor, keys: tf.Tensor, values: tf.Tensor, labels: tf.Tensor, training: bool = False
    ) -> dict[str, tf.Tensor]:
        """`call` with an explicit database: keys `[D, d_att]`, values `[D, d_val]`,
        labels `[D]`."""
        return self._decide(
            inputs,
            lambda queries: dense_answer(queries, self.prototype_attention, keys, values, labels, self.num_classes),
            training,
        )

    def predict_streamed(
        self,
        inputs: tf.Tensor,
        keys: tf.Tensor,
        values: tf.Tensor,
        labels: tf.Tensor,
        top_k: int = 5,
        block_size: int = streaming.DEFAULT_BLOCK_SIZE,
        training: bool = False,
    ) -> dict[str, tf.Tensor]:
        """`predict_with_database` for large databases: the database is read in blocks
        of `block_size` rows (`streaming.streamed_attention`), and instead of the dense
        `weights [B, D]` the `top_k` prototypes are returned, `top_weights [B, k]` and
        their database rows `top_rows [B, k]`. Same logits and confidence to float32
        rounding."""
        return self._decide(
            inputs,
            lambda queries: streamed_answer(
                queries, self.attention, keys, values, labels, self.num_classes, top_k, block_size
            ),
            training,
        )

    def shard_answer(
        self,
        inputs: tf.Tensor,
        keys: tf.Tensor,
        values: tf.Tensor,
        labels: tf.Tensor,
        indices: tf.Tensor,
        entries: int,
        block_size: int = streaming.DEFAULT_BLOCK_SIZE,
        coverage: tuple[int, int, int] | None = None,
    ) -> dict[str, tf.Tensor]:
        """A shard's answer for `inputs` over the database part keys, values, labels
        and each row's `indices` in the whole database (`index.shard_answer`): its
        `entries` entries of largest logit, for `serving.sharding.merge_answers`."""
        queries, _, _ = self.heads(self.encoder(inputs, training=False))

        def decision(vectors):
            return tf.cast(self.decision(tf.cast(vectors, self.compute_dtype)), tf.float32)

        return shard_answer(
            queries,
            keys,
            values,
            labels,
            indices,
            self.normalization,
            decision,
            self.num_classes,
            entries,
            block_size,
            coverage,
        )

    # === Training ===

    def sample_alpha(self, step: int | tf.Tensor) -> tf.Tensor:
        """Alpha of Eq. 1 for `step`: uniform in `alpha_range`, the same on all replicas."""
        low, high = self.alpha_range
        if low == high:
            return tf.constant(low, tf.float32)
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
        return tf.random.stateless_uniform([], seed, minval=low, maxval=high)

    def forward_train(
        self, data: dict[str, tf.Tensor], alpha: tf.Tensor | float, training: bool = True
    ) -> dict[str, tf.Tensor]:
        """Logits of the three paths of Eq. 1 and the attention weights, per replica."""
        inputs = data["inputs"]
        candidate_inputs = data["candidate_inputs"]
        if self.candidate_gradients and self.joint_encoding:
            batch_size = tf.shape(tf.nest.flatten(inputs)[0])[0]
            # One encoder pass over inputs and candidates together: batch-norm statistics
            # cover both, and the work is one large batch instead of two.
            joint = tf.nest.map_structure(lambda a, b: tf.concat([a, b], axis=0), inputs, candidate_inputs)
            features = self.encoder(joint, training=training)
            input_features, candidate_features = features[:batch_size], features[batch_size:]
        elif self.candidate_gradients:
            input_features = self.encoder(inputs, training=training)
            candidate_features = self.encoder(candidate_inputs, training=training)
        else:
            input_features = self.encoder(inputs, training=training)
            candidate_features = tf.stop_gradient(self.encoder(candidate_inputs, training=training))
        queries = self._unit(self.query_head(input_features))
        values = self.value_norm(self.value_head(input_features))
        candidate_mask = None
        if self.candidate_memory:
            candidate_features, candidate_mask = self.memory(_all_gather(candidate_features), write=training)
            candidate_keys = self._unit(self.key_head(candidate_features))
            candidate_values = self.value_norm(self.value_head(candidate_features))
        else:
            candidate_keys = _all_gather(self._unit(self.key_head(candidate_features)))
            candidate_values = _all_gather(self.value_norm(self.value_head(candidate_features)))
        weighted_values, weights = self.prototype_attention(queries, candidate_keys, candidate_values, candidate_mask)
        alpha = tf.cast(alpha, values.dtype)  # Mixed precision: values are bfloat16/float16.
        mixed_values = alpha * values + (1.0 - alpha) * weighted_values
        return {
            "plain_logits": self.decision(values),
            "prototype_logits": self.decision(weighted_values),
            "mixed_logits": self.decision(mixed_values),
            "weights": weights,
        }

    def loss_terms(self, labels: tf.Tensor, outputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Each term of Eq. 1 and Eq. 2 as a mean over the (per-replica) batch, and
        their weighted sum as `loss`."""
        return protoattend_loss_terms(
            labels,
            outputs,
            self.sparsity_weight,
            self.matching_loss_weight,
            self.matching_scale(),
            self.entropy_epsilon,
        )

    def matching_scale(self) -> tf.Tensor:
        """0.0 during the first `matching_warmup_steps` optimizer steps (the plain term
        trains alone), 1.0 after them and for a model without warm-up or optimizer."""
        optimizer = getattr(self, "optimizer", None)
        if not self.matching_warmup_steps or optimizer is None:
            return tf.constant(1.0)
        return tf.cast(optimizer.iterations >= self.matching_warmup_steps, tf.float32)

    def test_step(self, data: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Evaluation step of `model.evaluate`.

        A dict with `candidate_inputs` is scored like a training step (the three paths
        of Eq. 1 with the step's candidates). Anything else is `(x, y)` (or `(x, y,
        sample_weight)`) scored with the database of `set_database`: `loss`
        (cross-entropy of the decision), `prototype_accuracy`, `plain_accuracy` and
        `mean_confidence`, exact means over the examples.
        """
        if isinstance(data, dict) and "candidate_inputs" in data:
            outputs = self.forward_train(data, self.sample_alpha(0), training=False)
            terms = self.loss_terms(data["labels"], outputs)
            self._update_trackers(data["labels"], outputs, terms)
            return self._results(self._training_metrics)
        return super().test_step(data)

    def evaluation_terms(self, labels: tf.Tensor, outputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {
            "prototype_accuracy": correct(labels, outputs["logits"]),
            "plain_accuracy": correct(labels, outputs["plain_logits"]),
            "mean_confidence": outputs["confidence"],
        }

    def _update_trackers(self, labels, outputs, terms):
        super()._update_trackers(labels, outputs, terms)
        self._trackers["prototype_accuracy"].update_state(
            accuracy(tf.cast(labels, tf.int32), outputs["prototype_logits"])
        )
        for name, value in metrics.attention_statistics(outputs["weights"]).items():
            self._trackers[name].update_state(value)

    # === Saving ===

    def save_own_variables(self, store: dict) -> None:
        """Keras saving (`model.save("m.keras")`) keeps the prototype database too."""
        super().save_own_variables(store)
        if self.database is not None:
            save_to_store(self.database, store)

    def load_own_variables(self, store: dict) -> None:
        """Restores the model's own variables and, when saved, its database."""
        own = self._trainable_variables + self._non_trainable_variables
        entries = set(store.keys())
        expected = {str(i) for i in range(len(own))}
        if not expected <= entries:
            raise ValueError(
                f"The saved ProtoAttend holds variables {sorted(entries)}; this model needs "
                f"{sorted(expected)}: was it saved from another configuration?"
            )
        for i, variable in enumerate(own):
            variable.assign(store[str(i)])
        database = arrays_from_store(store)
        if database is not None:
            self.set_database(**database)

    # === Config ===

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(self.settings.get_config())
        return config

    @classmethod
    def from_config(cls, config: dict) -> "ProtoAttend":
        if config.get("attention") == "none":
            # A `.keras` file of a baseline written before it became its own model.
            config = {key: value for key, value in config.items() if key not in SETTING_NAMES}
            return BaselineClassifier.from_config(config)
        return super().from_config(config)


def _all_gather(tensor):
    """Concatenates a per-replica tensor over replicas (identity on one replica)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    return context.all_gather(tensor, axis=0)
