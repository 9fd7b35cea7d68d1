"""Saving and loading model checkpoints safely, with a small "card" describing the model.

Users bring their own trained networks, so loading must be safe for untrusted files and must fail
with a message that says what is wrong, not with a stack trace from deep inside torch:

* `.safetensors` is the native format: tensors only (no code can run on load) plus string
  metadata, where `save_checkpoint` writes the card - format name and version, the `ModelSpec`
  (architecture, input shape, classes, options), the task's text form and optional extra JSON.
* `.pt` / `.pth` files are read with `torch.load(weights_only=True)`, which only rebuilds tensors
  and plain containers; a pickle that would construct other objects (and so could run code) is
  refused with a ValueError saying so, and nothing in it is executed. A dict with a `state_dict`,
  `model_state_dict` or `model` entry is unwrapped; a `module.` prefix on every key
  (DataParallel) is stripped.

A file without a card and without `architecture=` is built from its keys when they are those of
a torchvision ResNet or VGG the registry builds (`mtz_core.recognize`; the width multiplier read
from the channel counts); the input shape must then be given (the file cannot say the image
size), and the card returned says what was recognised and assumed (`recognized`, `assumed`).

Before a model is built the file's size is checked against `max_bytes` (default 2 GiB); after
reading, every floating-point tensor is checked for NaN/Inf, and the keys and shapes are compared
with the architecture's own state dict, listing missing, unexpected and mis-shaped entries by name.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import parse_task
from .models import VGG_VARIANTS, ModelSpec, build_model, get_model_spec, list_models
from .models.vgg import VGG_CFGS
from .recognize import Recognized, recognize_state_dict

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "EXPORTED_TASK_FORMAT",
    "ACCEPTED_EXTENSIONS",
    "DEFAULT_MAX_BYTES",
    "save_checkpoint",
    "load_checkpoint",
    "read_state_dict",
    "model_from_state_dict",
    "exported_task_problem",
    "registry_options",
]

FORMAT_NAME = "mtz-checkpoint"
FORMAT_VERSION = 1
#: the format name of a task's network exported from a zipped network that no registry model
#: describes (a residual network's program over folded convolutions): weights without a card
EXPORTED_TASK_FORMAT = "mtz-exported-task"
ACCEPTED_EXTENSIONS = (".safetensors", ".pt", ".pth")
DEFAULT_MAX_BYTES = 2 * 1024**3
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_SHOW = 5  # names listed per kind of problem


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOW])
    return shown + (f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else "")


def _check_finite(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    bad = [
        k
        for k, t in tensors.items()
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise ValueError(f"{where}: tensor(s) {_names(bad)} contain NaN or Inf values")


# ----------------------------------------------------------------------------------------- save


def save_checkpoint(
    model: nn.Module,
    spec: ModelSpec | None,
    path: str | os.PathLike,
    *,
    task: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model`'s state dict and its card to `path` (must end in .safetensors).

    `spec` may be None for a registry model (its own `mtz_spec` is used). `task` is a task text
    or `TaskSpec` (stored in canonical text form); `extra` any JSON-serialisable mapping. The file
    is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
    """
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    spec = spec if spec is not None else get_model_spec(model)
    if not isinstance(spec, ModelSpec):
        raise TypeError(
            "save_checkpoint needs a ModelSpec (pass spec=..., or build the model with "
            f"create_model so it carries one), got {type(spec).__name__}"
        )
    target = Path(path)
    if target.suffix.lower() != ".safetensors":
        raise ValueError(f"checkpoints are saved as .safetensors; got {target.name!r}")
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "model_spec": spec.to_json(),
    }
    if task is not None:
        metadata["task"] = str(parse_task(task))
    if extra is not None:
        if not isinstance(extra, Mapping):
            raise TypeError(f"extra must be a mapping, got {type(extra).__name__}")
        try:
            metadata["extra"] = json.dumps(dict(extra), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"extra must be JSON-serialisable (finite numbers): {err}") from None

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _check_finite(tensors, f"model to save as {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


# ----------------------------------------------------------------------------------------- read


def _check_file(path: str | os.PathLike, max_bytes: int) -> Path:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise ValueError(f"checkpoint path {p} is not a file")
    if p.suffix.lower() not in ACCEPTED_EXTENSIONS:
        raise ValueError(
            f"{p.name}: unsupported checkpoint extension {p.suffix or '(none)'!r}; accepted: "
            f"{', '.join(ACCEPTED_EXTENSIONS)}"
        )
    size = p.stat().st_size
    if size > max_bytes:
        raise ValueError(
            f"{p.name} is {size:,} bytes, over the limit of {max_bytes:,} bytes; pass a larger "
            "max_bytes if you trust this file"
        )
    return p


def _read_safetensors(p: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{p.name} is not a valid .safetensors checkpoint ({err})") from None
    return tensors, metadata


def _read_torch(p: Path) -> Any:
    try:
        with warnings.catch_warnings():  # protocol notes are noise next to our own errors
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights only load failed" in first.lower():
            raise ValueError(
                f"refused to load {p.name}: it contains pickled Python objects other than tensors "
                "and plain containers (a whole nn.Module, custom classes, or code that would run "
                "when unpickled), and only weights-only loading is allowed. Re-save it as a "
                "state dict (torch.save(model.state_dict(), path)) or as .safetensors"
            ) from None
        raise ValueError(f"{p.name} is not a PyTorch checkpoint ({first})") from None
    except Exception as err:  # torch raises many kinds for non-checkpoint bytes
        raise ValueError(
            f"{p.name} is not a PyTorch checkpoint ({type(err).__name__}: {err})"
        ) from None


def _as_state_dict(obj: Any, p: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        raise ValueError(
            f"{p.name} holds a single tensor of shape {tuple(obj.shape)}, not a state dict "
            "(a mapping from parameter names to tensors)"
        )
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"{p.name} holds a {type(obj).__name__}, not a state dict (a mapping from parameter "
            "names to tensors)"
        )
    for key in _WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not obj:
        raise ValueError(f"{p.name} holds an empty mapping; no tensors to load")
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not all(isinstance(k, str) for k in obj):
        raise ValueError(
            f"{p.name} is not a state dict: entries {_names(not_tensors or list(map(str, obj)))} "
            f"are not tensors with string names (a wrapper dict must keep the weights under one "
            f"of {', '.join(_WRAPPER_KEYS)})"
        )
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _parse_card(metadata: Mapping[str, str], p: Path) -> dict[str, Any]:
    card: dict[str, Any] = {
        "format": metadata.get("format"),
        "format_version": None,
        "model_spec": None,
        "task": metadata.get("task"),
        "extra": {},
    }
    if card["format"] != FORMAT_NAME:
        return card
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise ValueError(
            f"{p.name}: bad format_version {metadata.get('format_version')!r} in its card"
        ) from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{p.name} was written in {FORMAT_NAME} format version {version}; this version of "
            f"mtz_core reads up to {FORMAT_VERSION} - upgrade mtz_core"
        )
    card["format_version"] = version
    if "model_spec" in metadata:
        card["model_spec"] = ModelSpec.from_json(metadata["model_spec"])
    if "extra" in metadata:
        try:
            card["extra"] = json.loads(metadata["extra"])
        except json.JSONDecodeError as err:
            raise ValueError(f"{p.name}: the card's 'extra' is not valid JSON ({err})") from None
    return card


def read_state_dict(
    path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, card) from a checkpoint file, checked for size, format and NaN/Inf.

    The card has keys `format`, `format_version`, `model_spec` (a ModelSpec or None), `task`,
    `extra`, `source` ("safetensors" or "torch") and `path`; files not written by
    `save_checkpoint` give a card of Nones.
    """
    p = _check_file(path, max_bytes)
    if p.suffix.lower() == ".safetensors":
        tensors, metadata = _read_safetensors(p)
        sd, source = _as_state_dict(tensors, p), "safetensors"
    else:
        sd, metadata, source = _as_state_dict(_read_torch(p), p), {}, "torch"
    _check_finite(sd, p.name)
    card = _parse_card(metadata, p)
    card["source"] = source
    card["path"] = str(p)
    return sd, card


# ----------------------------------------------------------------------------------------- load


def _head_key(spec: ModelSpec) -> str:
    """State-dict key of the last nn.Linear's weight (the classifier head) in `spec`'s model."""
    with torch.device("meta"):
        model = build_model(spec)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{spec.name} has no linear head to read num_classes from; pass it")
    return f"{names[-1]}.weight"


def _resolve_spec(
    architecture: str | ModelSpec | None,
    input_shape: tuple[int, ...] | None,
    num_classes: int | None,
    card_spec: ModelSpec | None,
    sd: Mapping[str, torch.Tensor],
    p: Path,
) -> ModelSpec:
    if isinstance(architecture, ModelSpec):
        if input_shape is not None and tuple(input_shape) != architecture.input_shape:
            raise ValueError(
                f"input_shape={tuple(input_shape)} contradicts the ModelSpec's "
                f"input_shape={architecture.input_shape}; pass one or the other"
            )
        if num_classes is not None and num_classes != architecture.num_classes:
            raise ValueError(
                f"num_classes={num_classes} contradicts the ModelSpec's "
                f"num_classes={architecture.num_classes}; pass one or the other"
            )
        return architecture
    if architecture is None:  # the card names it (`_spec_from_keys` reads a bare file's keys)
        architecture = card_spec.name
    if not isinstance(architecture, str):
        raise TypeError(
            f"architecture must be a model name, a ModelSpec or None, got "
            f"{type(architecture).__name__}"
        )
    same = card_spec is not None and card_spec.name == architecture.strip().lower()
    kwargs = card_spec.kwargs if same else {}
    if input_shape is None:
        if not same:
            raise ValueError(
                f"pass input_shape=... to load {p.name} as {architecture!r} (the file has no "
                "card saying it), e.g. (1, 28, 28)"
            )
        input_shape = card_spec.input_shape
    if num_classes is None:
        if same:
            num_classes = card_spec.num_classes
        else:  # read it from the head's weight
            key = _head_key(ModelSpec.make(architecture, tuple(input_shape), 1, **kwargs))
            if key not in sd or sd[key].ndim != 2:
                raise ValueError(
                    f"cannot infer num_classes: {p.name} has no 2-D tensor {key!r}, the head of "
                    f"{architecture!r} with default options; pass num_classes=..., or a "
                    "ModelSpec if the model was built with other options"
                )
            num_classes = int(sd[key].shape[0])
    return ModelSpec.make(architecture.strip().lower(), tuple(input_shape), num_classes, **kwargs)


def _compare(model: nn.Module, sd: Mapping[str, torch.Tensor], spec: ModelSpec, p: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k!r} (expected {tuple(own[k].shape)}, found {tuple(sd[k].shape)})"
        for k in own
        if k in sd and tuple(own[k].shape) != tuple(sd[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if shapes:
        shown = "; ".join(shapes[:_SHOW]) + (
            f"; and {len(shapes) - _SHOW} more" if len(shapes) > _SHOW else ""
        )
        problems.append(f"wrong shapes: {shown}")
    if problems:
        found = _what_it_is(sd)
        raise ValueError(
            f"{p.name} does not fit {spec.describe()}: "
            + "; ".join(problems)
            + ". "
            + (found[0].upper() + found[1:] if found else "")
            + "Check the architecture, its options, input_shape and num_classes."
        )


def _what_it_is(sd: Mapping[str, torch.Tensor]) -> str:
    """A sentence naming the known network the keys match ("" when none), with what to do."""
    found = recognize_state_dict(sd)
    if found is None:
        return ""
    try:
        options = registry_options(found, sd)
    except ValueError as err:
        return f"its keys are those of a {found.describe()}, but {err}; "
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    return (
        f"its keys are those of a {found.describe()}: load it with "
        f"architecture={found.name!r}, input_shape=(C, H, W) with C = {found.in_channels}"
        + (f", and the option(s) {shown}" if shown else "")
        + "; "
    )


# ------------------------------------------------------------- recognised bare state dicts

#: stage widths of torchvision's ResNets before the width multiplier: the stem, then each
#: stage's first block's first convolution (its `planes`)
_RESNET_BASES = (("conv1.weight", 64),) + tuple(
    (f"layer{i + 1}.0.conv1.weight", planes) for i, planes in enumerate((64, 128, 256, 512))
)


def _width_for(name: str, observed: list[tuple[str, int, int]]) -> float:
    """The width multiplier that scales every base channel count to the observed one, as the
    registry's builders round (`max(1, round(base · width))`), as a short decimal.

    `observed`: (key, base count, count found). The registry's rounding makes each count fix
    `width` to [(count - 0.5) / base, (count + 0.5) / base); the widths that fit all of them
    form one interval, and its shortest decimal is taken (any width inside builds the same
    model). An empty interval: no width the registry can build gives these counts."""
    lo, hi = 0.0, 8.0
    for _, base, count in observed:
        lo = max(lo, (count - 0.5) / base)
        hi = min(hi, (count + 0.5) / base)
    if not lo < hi:
        counts = ", ".join(f"{k} {c} (of {b} at width 1)" for k, b, c in observed[:6])
        raise ValueError(
            f"no width multiplier of the registry's {name} gives its channel counts ({counts}); "
            "the registry builds every stage scaled by one width in (0, 8]"
        )
    mid = (lo + hi) / 2
    for digits in range(1, 9):
        w = round(mid, digits)
        if lo < w < hi:
            return w
    return mid


def registry_options(found: Recognized, sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The registry options (`width`, for a VGG also `avgpool_size`) that build the network
    `recognize_state_dict` found in `sd`; a ValueError says why none can."""
    if found.name not in list_models():
        family = "resnet" if found.name.startswith("resnet") else "vgg"
        known = [m for m in list_models() if m.startswith(family)]
        raise ValueError(
            f"the model registry does not build {found.name!r} (its {family} models: "
            f"{', '.join(known)})"
        )
    if found.name in VGG_VARIANTS:
        bases = [int(v) for v in VGG_CFGS[VGG_VARIANTS[found.name][0]] if v != "M"]
        convs = sorted(
            int(m.group(1))
            for k in sd
            if (m := re.fullmatch(r"features\.(\d+)\.weight", k)) and sd[k].dim() == 4
        )
        observed = [
            (f"features.{i}.weight", b, int(sd[f"features.{i}.weight"].shape[0]))
            for i, b in zip(convs, bases)
        ]
        first = sd.get("classifier.0.weight")
        if first is not None and first.dim() == 2:
            observed.append(("classifier.0.weight", 4096, int(first.shape[0])))
        width = _width_for(found.name, observed)
        options: dict[str, Any] = {"width": width}
        if first is not None and first.dim() == 2:
            last = observed[len(bases) - 1][2]
            side = math.isqrt(max(int(first.shape[1]) // last, 0))
            if side < 1 or last * side * side != int(first.shape[1]):
                raise ValueError(
                    f"its classifier reads {int(first.shape[1])} features, not {last} channels "
                    "times a square pooled map (the registry's avgpool_size)"
                )
            options["avgpool_size"] = side
        return options
    observed = [(k, b, int(sd[k].shape[0])) for k, b in _RESNET_BASES if k in sd]
    return {"width": _width_for(found.name, observed)}


def _spec_from_keys(
    sd: Mapping[str, torch.Tensor],
    input_shape: tuple[int, ...] | None,
    num_classes: int | None,
    p: Path,
) -> tuple[ModelSpec, Recognized]:
    """The registry spec of a bare state dict whose keys name a torchvision ResNet or VGG the
    registry builds, for the given input shape (the file cannot say its height and width)."""
    found = recognize_state_dict(sd)
    if found is None:
        raise ValueError(
            f"{p.name} carries no model card and its keys are not those of a network this "
            "project recognises (torchvision ResNets and VGGs); pass architecture=<name or "
            "ModelSpec> together with input_shape=... and num_classes=..."
        )
    try:
        options = registry_options(found, sd)
    except ValueError as err:
        raise ValueError(
            f"{p.name} carries no model card; its keys are those of a {found.describe()}, but {err}"
        ) from None
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    if input_shape is None:
        raise ValueError(
            f"{p.name} carries no model card; its keys are those of a {found.describe()}: "
            f"pass input_shape=(C, H, W) with C = {found.in_channels} (the file does not say "
            f"the image size) to load it as architecture={found.name!r} with {shown}"
        )
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[0] != found.in_channels:
        raise ValueError(
            f"input_shape={shape} does not fit {p.name}: its keys are those of a "
            f"{found.describe()}, whose first convolution reads {found.in_channels} channel(s); "
            f"pass input_shape=({found.in_channels}, H, W)"
        )
    if num_classes is not None and num_classes != found.num_classes:
        raise ValueError(
            f"num_classes={num_classes} contradicts {p.name}: its head has "
            f"{found.num_classes} outputs ({found.describe()})"
        )
    return ModelSpec.make(found.name, shape, found.num_classes, **options), found


def load_checkpoint(
    path: str | os.PathLike,
    *,
    architecture: str | ModelSpec | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint into a freshly built model, in eval mode; returns (model, card).

    The architecture comes from `architecture` (a registry name or a full ModelSpec) or else from
    the file's card. With a bare name, `input_shape` and the options come from the card when it
    names the same architecture, and `num_classes` may be read from the head's weight shape.
    With neither, a torchvision ResNet or VGG is recognised by its keys and built from the
    registry for `input_shape` (required then); `card["recognized"]` and `card["assumed"]` say
    so. `card["model_spec"]` is the spec actually used.
    """
    sd, card = read_state_dict(path, max_bytes=max_bytes)
    return model_from_state_dict(
        sd, card, architecture=architecture, input_shape=input_shape, num_classes=num_classes
    )


def exported_task_problem(name: str) -> str:
    """Why a file of `EXPORTED_TASK_FORMAT` does not load as a model, and what does."""
    return (
        f"{name} is one task's network exported from a zipped network that no registry model "
        "describes (ZippedNet.export_task of a residual network, or of a chain whose widths no "
        "builder option sets), so it has no model card; load the zipped network it came from "
        "instead (mtz eval ZIPPED.safetensors, or ZippedNet.load(path).export_task(t) in Python)"
    )


def model_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    card: dict[str, Any],
    *,
    architecture: str | ModelSpec | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The second half of `load_checkpoint`, for a (state dict, card) that `read_state_dict`
    already read: callers that look at the card before choosing the architecture (the CLI)
    then read a large file once, not twice."""
    p = Path(card.get("path") or "checkpoint")
    found = None
    if architecture is None and card.get("format") == EXPORTED_TASK_FORMAT:
        raise ValueError(exported_task_problem(p.name))
    if architecture is None and card["model_spec"] is None:
        spec, found = _spec_from_keys(sd, input_shape, num_classes, p)
    else:
        spec = _resolve_spec(architecture, input_shape, num_classes, card["model_spec"], sd, p)
    model = build_model(spec)
    _compare(model, sd, spec, p)
    model.load_state_dict(sd, strict=False)  # strictness checked above, with better messages
    model.eval()
    if found is not None:
        spec = get_model_spec(model)  # with the options the builder filled in (assumed too)
    card = dict(card, model_spec=spec)
    if found is not None:
        card["recognized"] = found.describe()
        card["assumed"] = (
            f"no model card: the keys are those of a {found.describe()}, loaded as the "
            f"registry's {spec.describe()}; the input shape {spec.input_shape} was given"
        )
    return model, card
