"""Tasks: each owns its head, loss, predictions and metrics."""

from polymodal.tasks.base import Task
from polymodal.tasks.classify import Classify
from polymodal.tasks.retrieve import Retrieve

__all__ = ["Classify", "Retrieve", "Task"]
