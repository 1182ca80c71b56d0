"""AttentionSettings: what a ProtoAttend model is besides its encoder and classes,
as one validated value (the model's part of a run's configuration)."""

import dataclasses
import math

from proto_tf import normalizations
from proto_tf.attention import SPARSEMAX_TOP_K
from proto_tf.index import DEFAULT_STREAM_ABOVE


@dataclasses.dataclass(frozen=True)
class AttentionSettings:
    """The settings of a `ProtoAttend` model; each is also an attribute of the model
    and an entry of its `get_config`.

    Attributes:
      attention: the normalisation's name, `proto_tf.normalizations.names()`: "softmax"
        or "sparsemax" (the paper's), or "entmax15" (1.5-entmax). The paper's "Baseline
        enc." rows, the encoder and decision alone, are `BaselineClassifier`.
      attention_size: size of keys and queries (16 in every experiment of the paper).
      value_size: size of values (64 for most datasets, 128 for CIFAR-10, 16 for Adult).
      sparsity_weight: lambda of the entropy regulariser (Eq. 2); 0 disables it.
      matching_loss_weight: weight of Eq. 1's two attention terms (prototype and
        mixed paths); 1 is the paper. An ablation knob: 0 trains with the plain term
        alone, a value below 1 down-weights the matching terms' pull on the encoder.
      matching_warmup_steps: the first this-many optimizer steps train with the plain
        term alone (Eq. 1's other terms and Eq. 2 weighted 0): the encoder and the
        decision start from the plain path's, and the attention learns on features
        that already tell the classes apart. 0 is the paper. A deviation for heavy
        label noise, where the attention otherwise collapses onto a hub (docs/training.md).
      tied_head_init: True starts the key head with the query head's weights, so the
        first logits are a similarity of the two encodings (q . q'), not a random
        bilinear form; False (the paper) draws each head's own. With a warm-up, the
        attention then starts from neighbours in the plain path's features.
      cosine_scale: 0 (the paper) scores a candidate by q . k / sqrt(d). s > 0 scores it
        by s times the cosine of q and k (both scaled to one length): a key's norm no
        longer lifts it above the others for every query, the usual cause of a hub.
      alpha_range: `(low, high)`; alpha of Eq. 1's third term is drawn uniformly
        from it at each step. `low == high` fixes alpha.
      entropy_epsilon: epsilon of Eq. 2.
      seed: seed of the per-step alpha draws (a stateless function of seed and step,
        so every replica draws the same alpha and runs are reproducible).
      candidate_gradients: True (the paper) back-propagates through the encoder for
        the candidate database; False encodes candidates forward-only (the key and
        value heads still learn from them), a cheaper step in the spirit of Section
        5.1's "less frequent updates" of candidate keys and values.
      joint_encoding: with candidate gradients, True encodes inputs and candidates in
        one encoder call (BatchNorm statistics over both, one large batch); False in
        two calls, each with its own batch statistics, as the authors' code does.
      candidate_memory: 0 (the paper) attends over the candidates of the step. N > 0
        keeps a memory of the encoder outputs of the last N candidates: each step
        encodes only its own candidates (forward-only) into the oldest slots and
        attends over the whole memory, whose keys and values the heads recompute
        (and learn from) every step. The rest of Section 5.1's idea: candidates are
        encoded once, not once per step. Requires `candidate_gradients=False`.
      sparsemax_top_k: `top_k` of sparsemax's exact fast path (PrototypeAttention),
        a speed knob that also works under XLA; None sorts every row in full (the
        slow reference). Same weights either way.
      stream_above: a database of more rows is searched in blocks (`PrototypeIndex`):
        `model(x)` then returns the top prototypes instead of `weights [B, D]`.
    """

    attention: str = "softmax"
    attention_size: int = 16
    value_size: int = 64
    sparsity_weight: float = 0.0
    matching_loss_weight: float = 1.0
    matching_warmup_steps: int = 0
    tied_head_init: bool = False
    cosine_scale: float = 0.0
    alpha_range: tuple[float, float] = (0.45, 0.5)
    entropy_epsilon: float = 1e-6
    seed: int = 0
    candidate_gradients: bool = True
    joint_encoding: bool = True
    candidate_memory: int = 0
    sparsemax_top_k: int | None = SPARSEMAX_TOP_K
    stream_above: int = DEFAULT_STREAM_ABOVE

    def __post_init__(self):
        if self.attention not in normalizations.names():
            raise ValueError(
                f"Unknown attention {self.attention!r}; valid: {', '.join(normalizations.names())} "
                "(BaselineClassifier is the model without attention)."
            )
        low, high = (float(a) for a in self.alpha_range)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"alpha_range must satisfy 0 <= low <= high <= 1, got {self.alpha_range}.")
        if self.sparsity_weight < 0:
            raise ValueError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}.")
        if not 0 <= self.matching_loss_weight < math.inf:
            raise ValueError(f"matching_loss_weight must be >= 0, got {self.matching_loss_weight}.")
        if not 0 <= self.cosine_scale < math.inf:
            raise ValueError(f"cosine_scale must be >= 0, got {self.cosine_scale}.")
        if self.matching_warmup_steps < 0:
            raise ValueError(f"matching_warmup_steps must be >= 0, got {self.matching_warmup_steps}.")
        if self.candidate_memory < 0 or (self.candidate_memory and self.candidate_gradients):
            raise ValueError(
                f"candidate_memory must be 0, or positive with candidate_gradients=False "
                f"(remembered candidates have no gradient); got {self.candidate_memory} with "
                f"candidate_gradients={self.candidate_gradients}."
            )
        stream_above = self.stream_above
        if isinstance(stream_above, bool) or not isinstance(stream_above, int) or stream_above < 1:
            raise ValueError(f"stream_above must be a positive integer, got {stream_above!r}.")
        # Stored as the types their names say (a config read from JSON gives lists, ints
        # for floats); frozen, so set through object.__setattr__.
        typed = {
            "attention_size": int,
            "value_size": int,
            "sparsity_weight": float,
            "matching_loss_weight": float,
            "matching_warmup_steps": int,
            "tied_head_init": bool,
            "cosine_scale": float,
            "entropy_epsilon": float,
            "seed": int,
            "candidate_gradients": bool,
            "joint_encoding": bool,
            "candidate_memory": int,
        }
        for name, kind in typed.items():
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "alpha_range", (low, high))

    def get_config(self) -> dict:
        """The settings as JSON-ready values (`alpha_range` a list)."""
        config = dataclasses.asdict(self)
        config["alpha_range"] = list(self.alpha_range)
        return config


# The names of the settings, in the order of the fields (a model's config entries).
SETTING_NAMES = tuple(field.name for field in dataclasses.fields(AttentionSettings))
