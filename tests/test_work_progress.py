import io
import re

import keras
import numpy as np

from proto_tf import ProtoAttend
from proto_tf.data import Split
from proto_tf.evaluation import Evaluator
from proto_tf.work_progress import WorkProgress, tracked


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_short_work_is_silent_and_long_work_prints_a_line_every_interval_and_a_closing_line():
    clock, stream = Clock(), io.StringIO()
    progress = WorkProgress("encoding", 1000, stream, quiet_seconds=5, line_seconds=10, clock=clock)
    for now in (1, 2, 4):  # Within the quiet time: nothing.
        clock.now = now
        progress.advance(100)
    assert stream.getvalue() == ""
    for now in (6, 9, 17, 30):
        clock.now = now
        progress.advance(100)
    clock.now = 31
    progress.finish()
    assert stream.getvalue().splitlines() == [
        "encoding: 400/1,000 examples (40 %, 6 s)",  # First line once the quiet time is over,
        "encoding: 600/1,000 examples (60 %, 17 s)",  # then one per 10 s.
        "encoding: 700/1,000 examples (70 %, 30 s)",
        "encoding: 700 of 1,000 examples in 31 s.",
    ]
    quiet, clock = io.StringIO(), Clock()
    short = WorkProgress("predicting", 10, quiet, clock=clock)
    list(tracked([np.zeros(4), np.zeros(6)], short, len))
    assert quiet.getvalue() == "" and short.done == 10


def test_a_terminal_gets_one_rewritten_line():
    clock, stream = Clock(), Terminal()
    progress = WorkProgress("predicting", 20, stream, quiet_seconds=0, clock=clock)
    clock.now = 1
    progress.advance(10)
    clock.now = 2
    progress.advance(10)
    progress.finish()
    assert stream.getvalue() == (
        "\rpredicting: 10/20 examples (50 %, 1 s)\rpredicting: 20/20 examples (100 %, 2 s)"
        "\rpredicting: 20 of 20 examples in 2 s.\n"
    )


def test_the_evaluator_shows_the_database_encoding_and_the_prediction_by_examples():
    lines = io.StringIO()
    model = ProtoAttend(keras.layers.Dense(4), 2, "softmax")
    model.build((None, 3))
    rng = np.random.default_rng(0)
    split = Split(rng.normal(size=(25, 3)).astype("float32"), np.arange(25) % 2, np.arange(25))
    evaluator = Evaluator(
        model,
        lambda x: x,
        batch_size=10,
        progress=lambda d, n: WorkProgress(d, n, lines, quiet_seconds=0, line_seconds=0),
    )
    evaluator.evaluate(split, database_split=split)
    shown = [re.sub(r"\d+ s\b", "T s", line) for line in lines.getvalue().splitlines()]  # Real time.
    assert shown == [
        *(f"encoding the prototype database: {n}/25 examples ({4 * n} %, T s)" for n in (10, 20, 25)),
        "encoding the prototype database: 25 of 25 examples in T s.",
        *(f"predicting: {n}/25 examples ({4 * n} %, T s)" for n in (10, 20, 25)),
        "predicting: 25 of 25 examples in T s.",
    ]
