"""Tasks: each owns its head, loss, predictions and metrics. ``TASKS`` maps a task config's
``type`` to the class that ``from_config`` builds it."""

from polymodal.tasks.base import Task, TaskContext
from polymodal.tasks.classify import Classify
from polymodal.tasks.retrieve import Retrieve

TASKS: dict[str, type[Task]] = {"classify": Classify, "retrieve": Retrieve}

__all__ = ["TASKS", "Classify", "Retrieve", "Task", "TaskContext"]
