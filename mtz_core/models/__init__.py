"""Model registry: `create_model(name, input_shape, num_classes, **options)` and `ModelSpec`.

Models: `mlp`, `lenet300` (LeNet-300-100), `lenet5` (Caffe LeNet-5), and torchvision's VGG
family (`vgg11`, `vgg11_bn`, `vgg13`, `vgg13_bn`, `vgg16`, `vgg16_bn`, `vgg19`, `vgg19_bn`) with a
`width` multiplier. All are single chains of standard layers that the zipping engine can trace.
torchvision is imported only when a torchvision ResNet is built.
"""

from .registry import (
    MODEL_BUILDERS,
    SPEC_ATTR,
    build_model,
    create_model,
    get_model_spec,
    list_models,
    model_options,
)
from .simple import build_lenet5, build_lenet300, build_mlp
from .spec import ModelSpec
from .vgg import MIN_VGG_SIZE, VGG_VARIANTS, build_vgg

__all__ = [
    "MIN_VGG_SIZE",
    "MODEL_BUILDERS",
    "ModelSpec",
    "SPEC_ATTR",
    "VGG_VARIANTS",
    "build_lenet5",
    "build_lenet300",
    "build_mlp",
    "build_model",
    "build_vgg",
    "create_model",
    "get_model_spec",
    "list_models",
    "model_options",
]
