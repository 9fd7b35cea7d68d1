"""A task's identity as a short text: `DATASET[:RULE][?KEY=VALUE&KEY=VALUE...]`.

Multi-Task Zipping needs *pairs* of tasks, and the UI, CLI, checkpoint cards and benchmark tables
all have to name them; a short canonical string that parses back to the same frozen `TaskSpec` is
what makes "the model trained on `mnist:0-4`" unambiguous everywhere.

Grammar (whitespace around the whole text is ignored, dataset names are case-insensitive):

* `DATASET` - one of `known_datasets()` (e.g. `digits`, `mnist`, `cifar10`, `moons`).
* `:RULE` (optional) - how labels are derived from the dataset's classes:
    * absent: all classes, labels unchanged;
    * a class list such as `0-4`, `5-9`, `0,2,4` or `0-2,7`: keep only those classes and relabel
      them by their position in the list (`digits:5-9` maps 5..9 to 0..4; `mnist:4,2,0` maps
      4 to 0, 2 to 1, 0 to 2); ranges are inclusive and ascending, duplicates are an error;
    * `parity`: label = class % 2 (names "even", "odd");
    * `geK` (e.g. `ge5`): label = 1 if class >= K else 0.
* `?KEY=VALUE&...` (optional, generated 2-D datasets only) - e.g. `moons?n=2000&noise=0.2`; the
  accepted keys, defaults and ranges are in `catalog.DATASETS` (`n` is the total point count
  before the 80/20 split).

`str(spec)` prints the canonical form: lower-case dataset, class runs of three or more as ranges,
parameters sorted by key and those equal to their default dropped, so that
`parse_task(str(spec)) == spec` always holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .catalog import DatasetInfo, get_dataset_info

__all__ = ["TaskSpec", "parse_task", "RULES"]

RULES = ("all", "subset", "parity", "ge")
_RULE_HELP = "a class list like '0-4' or '0,2,4', 'parity', or 'geK' like 'ge5'"
_TEXT_RE = re.compile(r"^([A-Za-z0-9_\-]+)(?::([^?]*))?(?:\?(.*))?$")
_CLASS_LIST_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


@dataclass(frozen=True)
class TaskSpec:
    """Dataset + label rule + generator parameters; build it with `parse_task` or `make`.

    `rule` is one of `RULES`; `classes` is used by "subset" (original class ids, new label =
    position), `threshold` by "ge". `params` holds only non-default generator parameters, sorted.
    """

    dataset: str
    rule: str = "all"
    classes: tuple[int, ...] = ()
    threshold: int = 0
    params: tuple[tuple[str, int | float], ...] = ()

    def __post_init__(self) -> None:
        info = get_dataset_info(self.dataset)
        if info.name != self.dataset:
            raise ValueError(
                f"TaskSpec.dataset must be the canonical name {info.name!r}, got {self.dataset!r}"
            )
        if self.rule not in RULES:
            raise ValueError(f"unknown label rule {self.rule!r}; known rules: {', '.join(RULES)}")
        names = [k for k, _ in self.params]
        if names != sorted(set(names)):
            raise ValueError(f"TaskSpec.params must be sorted with unique keys, got {names}")
        for key, value in self.params:
            p = info.param(key)
            if p.check(value, info.name) == p.default:
                raise ValueError(
                    f"{info.name}: parameter {key}={value!r} equals its default; leave it out "
                    "(TaskSpec.make and parse_task do this for you)"
                )
        base = self.base_num_classes
        if self.rule == "subset":
            if len(self.classes) == 0:
                raise ValueError(f"{info.name}: a class subset needs at least one class")
            bad = [c for c in self.classes if not (0 <= c < base)]
            if bad:
                raise ValueError(
                    f"{info.name}: class ids {bad} are out of range; allowed 0..{base - 1}"
                )
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"{info.name}: class list {list(self.classes)} repeats a class")
        elif self.classes:
            raise ValueError(f"TaskSpec.classes is only used by rule 'subset', not {self.rule!r}")
        if self.rule == "ge":
            if not (1 <= self.threshold <= base - 1):
                raise ValueError(
                    f"{info.name}: threshold ge{self.threshold} would put every class on one "
                    f"side; allowed ge1..ge{base - 1}"
                )
        elif self.threshold != 0:
            raise ValueError(f"TaskSpec.threshold is only used by rule 'ge', not {self.rule!r}")

    @staticmethod
    def make(
        dataset: str,
        rule: str = "all",
        classes: tuple[int, ...] | list[int] = (),
        threshold: int = 0,
        **params: int | float,
    ) -> TaskSpec:
        """Build a spec from loose arguments: resolves aliases, coerces and sorts parameters."""
        info = get_dataset_info(dataset)
        clean: dict[str, int | float] = {}
        for key, value in params.items():
            p = info.param(key)
            value = p.check(value, info.name)
            if value != p.default:
                clean[key] = value
        return TaskSpec(
            info.name,
            rule,
            tuple(int(c) for c in classes),
            int(threshold),
            tuple(sorted(clean.items())),
        )

    @property
    def info(self) -> DatasetInfo:
        return get_dataset_info(self.dataset)

    @property
    def param_dict(self) -> dict[str, int | float]:
        """All generator parameters, defaults filled in."""
        out: dict[str, int | float] = {p.name: p.default for p in self.info.params}
        out.update(self.params)
        return out

    @property
    def base_num_classes(self) -> int:
        """Classes of the dataset itself, before the label rule."""
        return self.info.classes_for(dict(self.params))

    @property
    def num_classes(self) -> int:
        """Classes after the label rule."""
        if self.rule == "subset":
            return len(self.classes)
        if self.rule in ("parity", "ge"):
            return 2
        return self.base_num_classes

    @property
    def rule_text(self) -> str:
        """The `:RULE` part of the text form without the colon ("" for all classes)."""
        if self.rule == "subset":
            return _format_classes(self.classes)
        if self.rule == "parity":
            return "parity"
        if self.rule == "ge":
            return f"ge{self.threshold}"
        return ""

    def __str__(self) -> str:
        text = self.dataset
        if self.rule != "all":
            text += ":" + self.rule_text
        if self.params:
            text += "?" + "&".join(f"{k}={_format_value(v)}" for k, v in self.params)
        return text


def _format_value(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _format_classes(classes: tuple[int, ...]) -> str:
    """Ascending runs of three or more consecutive ids become `a-b`; the rest stay listed."""
    parts: list[str] = []
    i = 0
    while i < len(classes):
        j = i
        while j + 1 < len(classes) and classes[j + 1] == classes[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{classes[i]}-{classes[j]}")
        else:
            parts.extend(str(c) for c in classes[i : j + 1])
        i = j + 1
    return ",".join(parts)


def _parse_classes(text: str, dataset: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo_text, hi_text = part.split("-")
            lo, hi = int(lo_text), int(hi_text)
            if hi < lo:
                raise ValueError(
                    f"{dataset}: class range {part!r} must be ascending (write {hi}-{lo}, "
                    "or list the classes one by one to choose their order)"
                )
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    return tuple(out)


def _parse_value(key: str, text: str, dataset: str) -> int | float:
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{dataset}: parameter {key}={text!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{dataset}: parameter {key}={text!r} must be finite")
    return value


def parse_task(text: str | TaskSpec) -> TaskSpec:
    """Parse the text form described in the module docstring (a `TaskSpec` passes through)."""
    if isinstance(text, TaskSpec):
        return text
    if not isinstance(text, str):
        raise TypeError(f"a task must be given as text or TaskSpec, got {type(text).__name__}")
    stripped = text.strip()
    m = _TEXT_RE.match(stripped)
    if m is None:
        raise ValueError(
            f"cannot parse task {text!r}; expected DATASET[:RULE][?key=value&...], "
            "e.g. 'mnist:0-4', 'digits:parity', 'moons?n=2000&noise=0.2'"
        )
    name, rule_text, query = m.group(1), m.group(2), m.group(3)
    info = get_dataset_info(name)

    params: dict[str, int | float] = {}
    if query is not None:
        if not info.params:
            raise ValueError(f"{info.name}: this dataset takes no ?parameters (got {query!r})")
        for item in query.split("&"):
            key, sep, value_text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"{info.name}: parameter {item!r} must look like key=value")
            if key in params:
                raise ValueError(f"{info.name}: parameter {key!r} is given twice")
            info.param(key)  # unknown key -> lists the accepted ones
            params[key] = _parse_value(key, value_text.strip(), info.name)

    rule, classes, threshold = "all", (), 0
    if rule_text is not None:
        r = rule_text.strip().lower().replace(" ", "")
        if r in ("", "all"):
            pass
        elif r == "parity":
            rule = "parity"
        elif re.fullmatch(r"ge\d+", r):
            rule, threshold = "ge", int(r[2:])
        elif _CLASS_LIST_RE.match(r):
            rule, classes = "subset", _parse_classes(r, info.name)
        else:
            raise ValueError(f"{info.name}: unknown label rule {rule_text!r}; use {_RULE_HELP}")
    return TaskSpec.make(info.name, rule, classes, threshold, **params)
