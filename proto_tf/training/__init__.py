"""The training loop and what keeps it sound: configuration, distribution, checkpoints, run directories, health checks, BatchNorm statistics, progress logs."""
