"""Tasks and datasets: what a network was trained on, as a short text and fixed seeded splits.

`parse_task("mnist:0-4")` gives a frozen `TaskSpec`; `load_task(spec)` gives a `Task` holding
preprocessed `calib` (Hessians and retraining), `val` (choices made by experiment) and `test`
(reports only) tensors, with re-iterable `Task.batches(...)`. Only numpy and torch are needed at
import time: scikit-learn (digits) and torchvision (Fashion-MNIST, KMNIST, CIFAR, downloads) are
imported when a task needs them.
"""

from .batches import Batches
from .catalog import DATASETS, DatasetInfo, ParamSpec, get_dataset_info, known_datasets
from .idx import MNIST_FILES, MNIST_MD5, clear_idx_cache, load_mnist_arrays, read_idx
from .sources import TEST_FRACTION, VAL_FRACTION, stratified_split
from .task import SPLITS, Task, apply_label_rule, load_task, rule_label_names
from .taskspec import RULES, TaskSpec, parse_task
from .toy2d import generate_points

__all__ = [
    "Batches",
    "DATASETS",
    "DatasetInfo",
    "MNIST_FILES",
    "MNIST_MD5",
    "ParamSpec",
    "RULES",
    "SPLITS",
    "TEST_FRACTION",
    "VAL_FRACTION",
    "Task",
    "TaskSpec",
    "apply_label_rule",
    "clear_idx_cache",
    "generate_points",
    "get_dataset_info",
    "known_datasets",
    "load_mnist_arrays",
    "load_task",
    "parse_task",
    "read_idx",
    "rule_label_names",
    "stratified_split",
]
