"""Training: the Accelerate-based trainer, EMA, schedules, checkpoints and run logging."""

from magtok.training.trainer import NonFiniteLossError, Trainer, TrainingInterrupted

__all__ = ["NonFiniteLossError", "Trainer", "TrainingInterrupted"]
