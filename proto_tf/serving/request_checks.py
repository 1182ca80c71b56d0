"""Checks of a serving request inside the exported graph: a bad request fails with
InvalidArgument naming the input before any computation, never with a number."""

import tensorflow as tf


def checked_request(
    raw: dict, signature: dict, max_batch_size: int, value_ranges: dict, missing_allowed: tuple = ()
) -> dict:
    """The raw inputs, each made to depend on checks of the request, so that a bad
    request fails with InvalidArgument naming the input before any computation (a
    loaded signature does not enforce its own static shapes): shape, one batch size
    for all inputs, 1..max_batch_size instances, and for the inputs in `value_ranges`
    (Adult's numeric columns) finite values within their range."""
    names = list(signature)
    first = names[0]
    batch = tf.shape(tf.ensure_shape(raw[first], signature[first].shape))[0]
    checks = [
        tf.debugging.assert_positive(batch, message="empty batch: send at least one instance"),
        tf.debugging.assert_less_equal(
            batch,
            max_batch_size,
            message=f"too many instances: this export answers at most {max_batch_size} per "
            "request (--max_batch_size at export); split the request",
        ),
    ]
    values = {}
    for name in names:
        value = tf.ensure_shape(raw[name], signature[name].shape)  # "Shape of tensor ..."
        values[name] = value
        if name != first:
            checks.append(
                tf.debugging.assert_equal(
                    tf.shape(value)[0],
                    batch,
                    message=f"input {name} has another number of instances than input {first}; "
                    "every input needs one value per instance",
                )
            )
        if name in missing_allowed:
            low, high = value_ranges[name]
            valid = tf.math.is_nan(value) | ((value >= low) & (value <= high) & tf.math.is_finite(value))
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all(valid),
                    [
                        f"input {name} holds an infinity or a value outside [{low:g}, {high:g}] (NaN means "
                        "a missing value); first values:",
                        value,
                    ],
                )
            )
        elif name in value_ranges:
            low, high = value_ranges[name]
            checks.append(tf.debugging.assert_all_finite(value, message=f"input {name} holds NaN or an infinity"))
            checks.append(
                tf.debugging.Assert(
                    tf.reduce_all((value >= low) & (value <= high)),
                    [
                        f"input {name} holds a value outside [{low:g}, {high:g}] (the values a census "
                        "record can take); first values:",
                        value,
                    ],
                )
            )
    with tf.control_dependencies(checks):
        return {name: tf.identity(value) for name, value in values.items()}


def checked_threshold(threshold: tf.Tensor, raw: dict, signature: dict) -> tf.Tensor:
    """`confidence_threshold` checked: one finite value in [0, 1] per instance."""
    threshold = tf.cast(threshold, tf.float32)
    batch = tf.shape(raw[next(iter(signature))])[0]
    rank_check = tf.debugging.assert_rank(threshold, 1, message="confidence_threshold needs one value per instance")
    # The size is read only after the rank is known to be 1 (a scalar has no size to
    # slice, and would fail with an index error instead of this message).
    with tf.control_dependencies([rank_check]):
        size = tf.reshape(tf.size(threshold), [])
    checks = [
        rank_check,
        tf.debugging.assert_equal(
            size,
            batch,
            message="confidence_threshold needs one value per instance (no broadcasting)",
        ),
        tf.debugging.Assert(
            tf.reduce_all((threshold >= 0.0) & (threshold <= 1.0)),  # False for NaN.
            ["confidence_threshold values must be finite and in [0, 1]; got", threshold],
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(threshold)
