"""Command-line entry points (installed as `proto-tf-*` console scripts; `run/*.py`
call the same functions from a checkout)."""
