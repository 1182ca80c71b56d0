"""One call from a run folder to a model that answers: `proto_tf.load_run(model_dir)`."""

import dataclasses

import numpy as np

from proto_tf.data import LoadedDataset, Split, inference_database
from proto_tf.evaluation import Evaluator
from proto_tf.model import ProtoAttend
from proto_tf.training import run_store
from proto_tf.training.config import ExperimentConfig


@dataclasses.dataclass
class TrainedRun:
    """A run of run/train.py, loaded: its frozen `config`, its `dataset` (read as the run
    read it), the `model` restored from `checkpoint` (at `step`) with the run's
    inference database set, and the class names in label order."""

    model_dir: str
    config: ExperimentConfig
    dataset: LoadedDataset
    model: ProtoAttend
    checkpoint: str
    step: int
    evaluator: Evaluator = dataclasses.field(repr=False)

    @property
    def class_names(self) -> tuple:
        return self.dataset.class_names

    def predict(self, inputs: np.ndarray) -> dict:
        """Predictions for inputs in the dataset's stored form (as `dataset.test.inputs`:
        uint8 images, character codes, feature vectors), as NumPy arrays: `predictions`
        (class ids), `class_names`, `probabilities`, and with prototypes `confidence`
        (Eq. 3) and `plain_predictions`."""
        inputs = np.asarray(inputs)
        # Labels are not needed for predictions; zeros stand in for them.
        split = Split(inputs, np.zeros(len(inputs), np.int32), np.arange(len(inputs)))
        out = self.evaluator.predict(split)
        del out["labels"], out["loss"]
        out.pop("plain_loss", None)
        out["class_names"] = np.asarray(self.class_names, object)[out["predictions"]]
        return out


def load_run(
    model_dir: str, checkpoint: str = "best", data_dir: str | None = None, infer_database_size: int | None = None
) -> TrainedRun:
    """The run in `model_dir` with its `best` (or `last`) checkpoint, its data read from
    `data_dir` when given (else where the run read it), and, with attention, the
    inference database the run's evaluation used (`infer_database_size` examples of the
    training split, the run's D_infer by default).

    Example:
      >>> run = proto_tf.load_run("runs/adult_sparsemax_small")
      >>> run.predict(run.dataset.test.inputs[:4])["class_names"]
    """
    config, dataset, model, path = run_store.load_run(model_dir, checkpoint, data_dir)
    evaluator = Evaluator(model, dataset.preprocess, config.eval_batch_size)
    if model.uses_database:
        size = min(infer_database_size or config.infer_database_size, len(dataset.train))
        evaluator.set_database(inference_database(dataset.train, size, config.seed, dataset.info.class_shares))
    return TrainedRun(model_dir, config, dataset, model, path, run_store.checkpoint_step(path), evaluator)
