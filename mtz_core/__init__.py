"""mtz_core: Multi-Task Zipping (He, Zhou, Thiele, NeurIPS 2018) in PyTorch.

Merge two trained networks of one architecture into one multi-task network by sharing neurons
layer by layer, with Hessian-based pair costs and merged weights. Needs only torch, numpy and
scipy (safetensors for saving); nothing of the app.
"""

from .architecture import Architecture, ArchitectureError, LayerSpec, trace_model
from .config import METHODS, ZipConfig
from .progress import CancelToken, ProgressEvent, ZipCancelled, tqdm_progress
from .session import LayerRecord, ZipResult, ZipSession, zip_models
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
    "ZipCancelled",
    "ZipConfig",
    "ZipResult",
    "ZipSession",
    "ZippedNet",
    "tqdm_progress",
    "trace_model",
    "zip_models",
]
