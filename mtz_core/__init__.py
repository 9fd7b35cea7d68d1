"""mtz_core: Multi-Task Zipping (He, Zhou, Thiele, NeurIPS 2018) in PyTorch.

Merge two trained networks of one architecture into one multi-task network by sharing neurons
layer by layer, with Hessian-based pair costs and merged weights. Needs only torch, numpy and
scipy (safetensors for saving); nothing of the app.
"""

import os

# Torch's OpenMP threads busy-wait between operations by default. On small machines (2 cores
# here) the spinning threads starve the next operation: the Hessian stage of a 1024-wide zip
# took 0.89 s with it and 0.18 s without. Only a default, and only if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .architecture import Architecture, ArchitectureError, LayerSpec, trace_model
from .config import METHODS, ZipConfig
from .devices import resolve_device
from .evaluation import TaskScore, evaluate, evaluate_zipped
from .pipeline import zip_many, zip_models
from .progress import CancelToken, ProgressEvent, ZipCancelled, tqdm_progress
from .records import LayerRecord, SharePreview, ZipResult
from .session import ZipSession
from .training import TrainReport, retrain, train
from .tune import TunePlan, tune_shares
from .zipped import ZippedNet

__version__ = "0.1.0"

__all__ = [
    "Architecture",
    "ArchitectureError",
    "CancelToken",
    "LayerRecord",
    "LayerSpec",
    "METHODS",
    "ProgressEvent",
    "SharePreview",
    "TaskScore",
    "TrainReport",
    "TunePlan",
    "ZipCancelled",
    "ZipConfig",
    "ZipResult",
    "ZipSession",
    "ZippedNet",
    "evaluate",
    "evaluate_zipped",
    "resolve_device",
    "retrain",
    "tqdm_progress",
    "train",
    "trace_model",
    "tune_shares",
    "zip_many",
    "zip_models",
]
