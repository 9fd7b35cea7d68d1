"""The engine's messages about a checkpoint, told in the Load page's terms.

The engine speaks to Python callers ("pass architecture=…", "load_task('mnist', pad_to=32)");
on screen the same advice must name the control that does it (the Architecture picker, the
Options box, the task's .npz upload). `for_upload` rewrites what the engine says about one
uploaded model; `text_file_problem` catches a text file renamed `.pt`, which the unpickler
otherwise reports as "IndexError: pop from empty list" or as refused pickled objects.
"""

from __future__ import annotations

import json
import re

__all__ = ["for_upload", "text_file_problem"]

SAVE_HINT = "save the weights with torch.save(model.state_dict(), path) as .pt, or as .safetensors"


def _options_json(text: str) -> str:
    """'width=0.125, avgpool_size=1' as the Options box wants it: {"width": 0.125, …}."""
    out: dict[str, object] = {}
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        try:
            out[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return json.dumps(out)


def for_upload(text: str, letter: str) -> str:
    """The engine's message about model `letter`'s upload, with the controls to change named
    (Architecture X, Options X, Task X, Checkpoint X) instead of Python arguments."""
    x = letter.upper()
    arch, opts, task, ckpt = (
        f"**Architecture {x}**",
        f"**Options {x}**",
        f"**Task {x}**",
        f"**Checkpoint {x}**",
    )
    images = (
        "give model {x} a task of {what}: upload it as a .npz ({task} → my .npz); the built-in "
        "tasks' images are smaller (digits 8×8, MNIST 28×28)"
    )
    text = re.sub(
        r"pass architecture=<name or ModelSpec> together with input_shape=\.\.\. and "
        r"num_classes=\.\.\.",
        f"choose its architecture in the {arch} picker (and its options in {opts}); the input "
        f"shape and the classes come from task {x}",
        text,
    )

    def load_it(m: re.Match[str]) -> str:
        said = f"choose {m.group(1)} in the {arch} picker"
        if m.group(3):
            said += f" with {opts} {_options_json(m.group(3))}"
        return said + f" (task {x} must have {m.group(2)}-channel images)"

    text = re.sub(
        r"load it with architecture='([\w.]+)', input_shape=\(C, H, W\) with C = (\d+)"
        r"(?:, and the option\(s\) ([^;]+))?",
        load_it,
        text,
    )
    text = text.replace(
        "Check the architecture, its options, input_shape and num_classes.",
        f"check {arch}, {opts} and {task}.",
    )
    text = re.sub(
        r"; load the task with pad_to=(\d+) \(e\.g\. load_task\('\w+', pad_to=\d+\)\)",
        lambda m: (
            "; "
            + images.format(x=x, task=task, what=f"images of at least {m.group(1)}×{m.group(1)}")
        ),
        text,
    )
    size = re.search(r"needs inputs of at least (\d+)x\d+, got \d+x\d+$", text)
    if size:  # a ResNet says no more than that
        what = f"images of at least {size.group(1)}×{size.group(1)}"
        text += "; " + images.format(x=x, task=task, what=what)
    text = re.sub(
        r"input_shape=(\([^)]*\)) does not fit ",
        lambda m: f"task {x}'s inputs {m.group(1)} do not fit ",
        text,
    )
    text = re.sub(
        r"pass input_shape=\((\d+), H, W\)$",
        lambda m: images.format(x=x, task=task, what=f"{m.group(1)}-channel images"),
        text,
    )
    text = re.sub(
        r"is not a PyTorch checkpoint \((?:IndexError|KeyError|EOFError|UnpicklingError|"
        r"RuntimeError|_pickle\.UnpicklingError)[^)]*\)",
        f"is not a PyTorch checkpoint: it could not be read as one; {SAVE_HINT}, and choose it "
        f"in {ckpt}",
        text,
    )
    if "is a text file, not a PyTorch checkpoint" in text:
        text += f"; choose another file in {ckpt}"
    return text


def text_file_problem(file_name: str, data: bytes) -> str | None:
    """Why `data` is no checkpoint when it is plain text (a text file renamed .pt), else None.

    A checkpoint is a zip archive (torch.save), a pickle (older torch.save) or safetensors (a
    little-endian header length, then JSON): none decodes as printable text from its first
    byte."""
    head = data[:4096]
    if not head or head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    sample = head.decode("utf-8", errors="replace")  # a character cut at the end is no matter
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in sample)
    if printable - 2 * sample.count("\ufffd") < 0.95 * len(sample):
        return None
    return f"{file_name} is a text file, not a PyTorch checkpoint; {SAVE_HINT}"
