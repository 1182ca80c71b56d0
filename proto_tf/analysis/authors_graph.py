"""Times the authors' released TF1 training graph (google-research `protoattend/`) on
this machine, for the side-by-side step-time comparison of BENCHMARKS.md.

Their code is not part of this project: pass the folder of a checkout of it
(`model.py`, `input_data.py`, `options.py`). It needs TensorFlow's legacy Keras
(`pip install --no-deps tf-keras==2.21.0`: without --no-deps pip adds the full
`tensorflow` package over `tensorflow-cpu`; environment `TF_USE_LEGACY_KERAS=1`) for
`tf.layers`, so it runs in its own process (`python -m proto_tf.analysis.authors_graph`,
started by `run/benchmark.py --suite=authors`), which imports nothing of this project
that needs Keras 3. The three `tf.contrib` functions their model calls, gone from TensorFlow 2,
are supplied with the algorithms they had: sort-based sparsemax (Martins & Astudillo,
2016), `l2_regularizer` and `layer_norm` (epsilon 1e-12, variables `LayerNorm/beta`
and `LayerNorm/gamma`, shared under `reuse`).

The graph is the training part of their `main_protoattend.py`: two encoder calls (the
batch, then the candidates with shared weights), attention, the entropy term, the three
cross-entropies, Adam with exponential decay, clipping by value after BatchNorm's
update ops; each step is one `session.run(train_op)`, as their loop, fed by their
tf.data pipeline (`map(parse_function_train).repeat().batch(...)`). It inherits the
caller's environment, so both use the same CPU allocator (TF_CPU_ALLOCATOR_USE_BFC).
"""

import argparse
import json
import os
import sys
import types

import numpy as np

from proto_tf.analysis import step_profile  # TensorFlow only: no Keras 3.


def _sort_sparsemax(tf, logits):
    """Sparsemax of each row by sorting (tf.contrib.sparsemax's algorithm)."""
    logits = logits - tf.reduce_mean(logits, axis=1, keepdims=True)
    width = tf.shape(logits)[1]
    ordered, _ = tf.nn.top_k(logits, k=width)
    cumulative = tf.cumsum(ordered, axis=1)
    ranks = tf.cast(tf.range(1, width + 1), logits.dtype)
    support = tf.reduce_sum(tf.cast(1.0 + ranks * ordered > cumulative, tf.int32), axis=1)
    rows = tf.range(tf.shape(logits)[0])
    total = tf.gather_nd(cumulative, tf.stack([rows, support - 1], axis=1))
    threshold = (total - 1.0) / tf.cast(support, logits.dtype)
    return tf.maximum(0.0, logits - threshold[:, None])


def _layer_norm(tf, inputs):
    """Layer normalisation over the last axis with an offset and a scale."""
    with tf.variable_scope(None, default_name="LayerNorm"):
        channels = inputs.shape[-1]
        beta = tf.get_variable("beta", [channels], initializer=tf.zeros_initializer())
        gamma = tf.get_variable("gamma", [channels], initializer=tf.ones_initializer())
        mean, variance = tf.nn.moments(inputs, [1], keepdims=True)
        return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, 1e-12)


def install_contrib(tf):
    """Gives `tf` (tensorflow.compat.v1) the `tf.contrib` functions the authors' model uses."""
    tf.contrib = types.SimpleNamespace(
        sparsemax=types.SimpleNamespace(sparsemax=lambda logits: _sort_sparsemax(tf, logits)),
        layers=types.SimpleNamespace(
            l2_regularizer=lambda scale: lambda weights: scale * tf.nn.l2_loss(weights),
            layer_norm=lambda inputs: _layer_norm(tf, inputs),
        ),
    )


def training_graph(tf, code, images, labels, batch_size, candidates, depth):
    """The training op of the authors' graph over `images [N, 28, 28]`, `labels [N]`."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).map(code.input_data.parse_function_train)
    batch = tf.data.make_one_shot_iterator(dataset.repeat().batch(batch_size))
    candidate_batch = tf.data.make_one_shot_iterator(dataset.repeat().batch(candidates))
    inputs, _, input_labels = batch.get_next()
    candidate_inputs, _, _ = candidate_batch.get_next()
    flags = code.FLAGS
    _, queries, values = code.model.cnn_encoder(inputs, reuse=False, is_training=True, depth=depth)
    keys, _, candidate_values = code.model.cnn_encoder(candidate_inputs, reuse=True, is_training=True, depth=depth)
    weighted, weights = code.model.relational_attention(
        queries, keys, candidate_values, normalization=flags.normalization
    )
    epsilon = flags.epsilon_sparsity
    entropy = tf.reduce_sum(-weights * tf.log(epsilon + weights), axis=1)
    sparsity = tf.reduce_mean(entropy) - tf.log(epsilon + float(candidates))
    alpha = flags.alpha_intermediate
    losses = []
    for reuse, encoded in ((False, (1 - alpha) * values + alpha * weighted), (True, values), (True, weighted)):
        logits, _ = code.model.classify(encoded, reuse=reuse)
        losses.append(
            tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(logits=logits, labels=input_labels))
        )
    loss = tf.add_n(losses) + flags.sparsity_weight * sparsity
    step = tf.train.get_or_create_global_step()
    rate = tf.train.exponential_decay(
        flags.init_learning_rate, step, decay_steps=flags.decay_every, decay_rate=flags.decay_rate
    )
    optimizer = tf.train.AdamOptimizer(learning_rate=rate)
    with tf.control_dependencies(tf.get_collection(tf.GraphKeys.UPDATE_OPS)):
        clip = flags.gradient_thresh
        gradients = [(tf.clip_by_value(g, -clip, clip), v) for g, v in optimizer.compute_gradients(loss)]
        return optimizer.apply_gradients(gradients, global_step=step), loss


def load_code(folder, flag_args):
    """Imports the authors' `options`, `input_data` and `model` from `folder`, with
    their flags parsed from `flag_args`."""
    import tensorflow.compat.v1 as tf  # Only here: the caller sets TF_USE_LEGACY_KERAS first.

    install_contrib(tf)
    sys.path.insert(0, os.path.abspath(folder))
    import options  # noqa: E402  (the authors' modules, from their folder)

    options.FLAGS(["authors_graph", *flag_args])
    import input_data
    import model

    return tf, types.SimpleNamespace(FLAGS=options.FLAGS, input_data=input_data, model=model)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors_code", required=True, help="folder with their model.py")
    parser.add_argument("--data", required=True, help=".npz with `images` and `labels`")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=128)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--decay_every", type=int, default=80)
    parser.add_argument("--normalization", default="sparsemax")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    flag_args = [
        f"--batch_size={args.batch_size}",
        f"--example_cand_size={args.candidates}",
        f"--decay_every={args.decay_every}",
        f"--normalization={args.normalization}",
    ]
    tf, code = load_code(args.authors_code, flag_args)
    tf.disable_eager_execution()
    tf.set_random_seed(code.FLAGS.random_seed)
    arrays = np.load(args.data)
    train_op, _ = training_graph(
        tf, code, arrays["images"], arrays["labels"], args.batch_size, args.candidates, args.depth
    )
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())

        def step():
            session.run(train_op)  # As their loop: one run of the training op per step.

        for _ in range(args.warmup):
            step()
        print(json.dumps({"ready": True}), flush=True)
        # Commands on standard input, one JSON line answered per command, so the caller
        # can take turns with its own steps: `time` (a round of --steps steps) or
        # `profile` (kernel times of 5 steps); anything else ends the process.
        for command in sys.stdin:
            if command.strip() == "time":
                print(json.dumps(step_profile.resource_use(step, args.steps)), flush=True)
            elif command.strip() == "profile":
                print(json.dumps(step_profile.profile_steps(step, 5)), flush=True)
            else:
                break


if __name__ == "__main__":
    main()
