"""The training loss of ProtoAttend: Eq. 1's three paths and Eq. 2's entropy term."""

import tensorflow as tf

from proto_tf.classifier import cross_entropy


def protoattend_loss_terms(
    labels: tf.Tensor,
    outputs: dict[str, tf.Tensor],
    sparsity_weight: float,
    matching_loss_weight: float = 1.0,
    matching_scale: tf.Tensor | float = 1.0,
    entropy_epsilon: float = 1e-6,
) -> dict[str, tf.Tensor]:
    """Each term of Eq. 1 and Eq. 2 as a mean over the (per-replica) batch, and their
    weighted sum as `loss`, from the training paths' `outputs` (`plain_logits`,
    `prototype_logits`, `mixed_logits`, `weights [B, D]`).

    `matching_scale` multiplies every term but the plain one (0 during a warm-up);
    `matching_loss_weight` weighs Eq. 1's two attention terms; `sparsity_weight` is
    Eq. 2's lambda (with it, `sparsity_term` reports the weighted term)."""
    labels = tf.cast(labels, tf.int32)
    terms = {"plain_loss": cross_entropy(labels, outputs["plain_logits"])}
    weights = outputs["weights"]
    terms["prototype_loss"] = cross_entropy(labels, outputs["prototype_logits"])
    terms["mixed_loss"] = cross_entropy(labels, outputs["mixed_logits"])
    # Eq. 2 is the entropy of p: it is smallest for a one-hot p, so adding it to
    # the loss pushes towards few prototypes (the paper's text has the extremes of
    # Eq. 2 swapped; minimising it is what the regulariser is for).
    entropy = -tf.reduce_sum(weights * tf.math.log(weights + entropy_epsilon), axis=-1)
    terms["sparsity_loss"] = tf.reduce_mean(entropy)
    if sparsity_weight:
        terms["sparsity_term"] = matching_scale * sparsity_weight * terms["sparsity_loss"]
    terms["loss"] = terms["plain_loss"] + matching_scale * (
        matching_loss_weight * (terms["prototype_loss"] + terms["mixed_loss"])
        + sparsity_weight * terms["sparsity_loss"]
    )
    return terms
