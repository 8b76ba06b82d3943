"""Tasks: each owns its head, loss, predictions and metrics. ``TASKS`` maps a task config's
``type`` to the class that ``from_config`` builds it."""

from polymodal.tasks.base import Task, TaskContext
from polymodal.tasks.caption import Caption
from polymodal.tasks.classify import Classify
from polymodal.tasks.regress import Regress
from polymodal.tasks.retrieve import Retrieve
from polymodal.tasks.vqa import VQA

TASKS: dict[str, type[Task]] = {
    "classify": Classify,
    "retrieve": Retrieve,
    "vqa": VQA,
    "regress": Regress,
    "caption": Caption,
}

__all__ = ["TASKS", "VQA", "Caption", "Classify", "Regress", "Retrieve", "Task", "TaskContext"]
