"""How an export answers, as data: one frozen value checked when it is made, handed
down whole instead of four numbers threaded through every level."""

import dataclasses

from proto_tf.errors import ConfigError
from proto_tf.index import DEFAULT_STREAM_ABOVE, KEY_DTYPES

# Largest request answered: 100,000 Adult rows take ~10 GB, so a cap keeps one request
# from exhausting a server (about 94 KB a row for Adult at D_infer 4096).
DEFAULT_MAX_BATCH_SIZE = 8192
# Entries a shard reports per query: past a sparse support of this many the router
# refuses the answer (trained supports hold a few hundred at 1M prototypes).
DEFAULT_SHARD_ENTRIES = 1024


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """The options of an export.

    Attributes:
      top_k: prototypes returned per instance.
      max_batch_size: the most instances a request may hold.
      stream_above: a database of more prototypes is searched in blocks.
      key_dtype: the dtype the database's keys are stored in (`KEY_DTYPES`).
      shard_entries: entries a shard reports per query; None: no `shard_answer`
        signature.
    """

    top_k: int = 5
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    stream_above: int = DEFAULT_STREAM_ABOVE
    key_dtype: str = "float32"
    shard_entries: int | None = None

    def __post_init__(self):
        # The fields are the command line's flags (run/export.py), so errors name them so.
        for name in ("top_k", "max_batch_size", "stream_above", "shard_entries"):
            value = getattr(self, name)
            if name == "shard_entries" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name}={value!r} must be a positive integer.")
        if self.key_dtype not in KEY_DTYPES:
            raise ConfigError(f"--database_key_dtype={self.key_dtype!r} must be one of {', '.join(KEY_DTYPES)}.")

    def replace(self, **changes) -> "ExportOptions":
        """A copy with the fields given changed (those given as None keep their value)."""
        return dataclasses.replace(self, **{name: value for name, value in changes.items() if value is not None})
