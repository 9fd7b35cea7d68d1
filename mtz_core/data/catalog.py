"""What the project knows about each dataset, as constants.

Everything a task needs to know *before* touching any file lives here: the kind of input (image or
2-D point), its shape, how many classes, the class names, the normalisation constants, and for the
generated 2-D datasets the parameters the text form may set. Keeping it in one table means the
text-form parser can reject a bad task ("mnist:0-12", "moons?noise=-1") without loading anything,
and the UI can list datasets without importing torchvision or scikit-learn.

Normalisation constants (per channel, applied after scaling pixels to [0, 1]):

| dataset      | mean                   | std                    | source                  |
| ------------ | ---------------------- | ---------------------- | ----------------------- |
| digits       | 0.3053                 | 0.3760                 | all 1,797 images / 16   |
| mnist        | 0.1307                 | 0.3081                 | training set (standard) |
| fashionmnist | 0.2860                 | 0.3530                 | training set (standard) |
| kmnist       | 0.1918                 | 0.3483                 | training set (standard) |
| cifar10      | 0.4914, 0.4822, 0.4465 | 0.2470, 0.2435, 0.2616 | training set (standard) |
| cifar100     | 0.5071, 0.4865, 0.4409 | 0.2673, 0.2564, 0.2762 | training set (standard) |

The 2-D datasets are generated at roughly unit scale and are not normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ParamSpec",
    "DatasetInfo",
    "DATASETS",
    "DATASET_ALIASES",
    "get_dataset_info",
    "known_datasets",
]


@dataclass(frozen=True)
class ParamSpec:
    """One `?key=value` parameter of a generated dataset: its type, default and allowed range."""

    name: str
    kind: type  # int or float
    default: int | float
    low: float
    high: float
    doc: str

    def check(self, value: int | float, dataset: str) -> int | float:
        """Coerce to `kind` and range-check; the error names the dataset, key and allowed range."""
        if self.kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(
                    f"{dataset}: parameter {self.name}={value!r} must be a whole number "
                    f"in [{self.low:g}, {self.high:g}]"
                )
            value = int(value)
        else:
            value = float(value)
        if not (self.low <= value <= self.high):
            raise ValueError(
                f"{dataset}: parameter {self.name}={value!r} is out of range; "
                f"allowed [{self.low:g}, {self.high:g}] ({self.doc})"
            )
        return value


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset (see the module docstring for the constants' origin)."""

    name: str
    kind: str  # "image" (C, H, W) or "points" (2,)
    input_shape: tuple[int, ...]
    num_classes: int | None  # None: set by a parameter (`class_param`)
    label_names: tuple[str, ...] | None  # None: taken from the files at load time
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    class_param: str | None = None
    description: str = ""

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        allowed = ", ".join(p.name for p in self.params) or "none"
        raise ValueError(
            f"{self.name}: unknown parameter {name!r}; this dataset accepts: {allowed}"
        )

    def classes_for(self, params: dict[str, int | float]) -> int:
        """Number of classes before any label rule, given the task's parameters."""
        if self.num_classes is not None:
            return self.num_classes
        if self.class_param is None:
            raise ValueError(f"{self.name}: dataset has neither a class count nor a class param")
        return int(params.get(self.class_param, self.param(self.class_param).default))


_DIGIT_NAMES = tuple(str(i) for i in range(10))
_INF = float("inf")


def _n(default: int = 1000) -> ParamSpec:
    return ParamSpec("n", int, default, 10, 10_000_000, "total number of points, before the split")


def _noise(default: float) -> ParamSpec:
    return ParamSpec("noise", float, default, 0.0, 100.0, "std of Gaussian noise added to points")


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits",
        "image",
        (1, 8, 8),
        10,
        _DIGIT_NAMES,
        (0.3053,),
        (0.3760,),
        description="scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download)",
    ),
    "mnist": DatasetInfo(
        "mnist",
        "image",
        (1, 28, 28),
        10,
        _DIGIT_NAMES,
        (0.1307,),
        (0.3081,),
        description="MNIST handwritten digits, 28x28, official 60,000/10,000 split (local files)",
    ),
    "fashionmnist": DatasetInfo(
        "fashionmnist",
        "image",
        (1, 28, 28),
        10,
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        (0.2860,),
        (0.3530,),
        description="Fashion-MNIST, 28x28, official 60,000/10,000 split (via torchvision)",
    ),
    "kmnist": DatasetInfo(
        "kmnist",
        "image",
        (1, 28, 28),
        10,
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        (0.1918,),
        (0.3483,),
        description="Kuzushiji-MNIST, 28x28, official 60,000/10,000 split (via torchvision)",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        "image",
        (3, 32, 32),
        10,
        (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        description="CIFAR-10, 32x32 colour, official 50,000/10,000 split (via torchvision)",
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        "image",
        (3, 32, 32),
        100,
        None,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        description="CIFAR-100 (fine labels), official 50,000/10,000 split (via torchvision)",
    ),
    "moons": DatasetInfo(
        "moons",
        "points",
        (2,),
        2,
        ("upper moon", "lower moon"),
        params=(_n(), _noise(0.1)),
        description="two interleaving half circles",
    ),
    "circles": DatasetInfo(
        "circles",
        "points",
        (2,),
        2,
        ("outer circle", "inner circle"),
        params=(
            _n(),
            _noise(0.05),
            ParamSpec("factor", float, 0.5, 0.01, 0.99, "inner radius / outer radius"),
        ),
        description="a small circle inside a large one",
    ),
    "spirals": DatasetInfo(
        "spirals",
        "points",
        (2,),
        None,
        None,
        params=(
            _n(),
            _noise(0.05),
            ParamSpec("arms", int, 2, 2, 20, "number of spiral arms (= classes)"),
            ParamSpec("turns", float, 1.0, 0.1, 10.0, "how many turns each arm makes"),
        ),
        class_param="arms",
        description="interleaved spiral arms, one class per arm",
    ),
    "xor": DatasetInfo(
        "xor",
        "points",
        (2,),
        2,
        ("same sign", "opposite sign"),
        params=(_n(), _noise(0.1)),
        description="four quadrants; class = sign(x0) xor sign(x1)",
    ),
    "blobs": DatasetInfo(
        "blobs",
        "points",
        (2,),
        None,
        None,
        params=(
            _n(),
            ParamSpec("centers", int, 3, 2, 50, "number of Gaussian blobs (= classes)"),
            ParamSpec("std", float, 0.5, 0.001, 100.0, "std of each blob"),
        ),
        class_param="centers",
        description="Gaussian blobs whose centres sit evenly on a circle of radius 2",
    ),
}

DATASET_ALIASES: dict[str, str] = {
    "fashion-mnist": "fashionmnist",
    "fashion_mnist": "fashionmnist",
    "fmnist": "fashionmnist",
    "k-mnist": "kmnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "spiral": "spirals",
}


def known_datasets() -> list[str]:
    """Names accepted in a task's text form (aliases excluded), in table order."""
    return list(DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by name or alias (case-insensitive); unknown names list the known ones."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    key = DATASET_ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}")
    return DATASETS[key]
