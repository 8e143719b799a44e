"""Training: settings declared once, the loop (on one device or under torchrun), evaluation, checkpoints that a
run goes on from, and the looks inside the blocks while it learns."""

from .checkpoints import CHECKPOINT_FORMAT, Position, Resume, checkpoint_bytes, load_checkpoint, load_resume
from .devices import autocast, pick_device, pick_precision, precision_and_why
from .evaluation import accuracy, check_classes, evaluate, evaluate_checkpoint, per_class_rows
from .loop import Progress, Result, Trainer
from .schedule import lr_factor, param_groups
from .settings import DEFAULTS, PRECISIONS, RESUME_MAY_CHANGE, SCHEDULES, TrainSettings

__all__ = ["CHECKPOINT_FORMAT", "DEFAULTS", "PRECISIONS", "RESUME_MAY_CHANGE", "SCHEDULES", "Position", "Progress",
           "Resume", "Result", "TrainSettings", "Trainer", "accuracy", "autocast", "check_classes", "checkpoint_bytes",
           "evaluate", "evaluate_checkpoint", "load_checkpoint", "load_resume", "lr_factor", "param_groups",
           "per_class_rows", "pick_device", "pick_precision", "precision_and_why"]
