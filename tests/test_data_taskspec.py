"""Task text forms: parsing, canonical printing, round trips and errors."""

from __future__ import annotations

import pytest

from mtz_core.data import TaskSpec, known_datasets, parse_task

CANONICAL = [
    "digits",
    "digits:0-4",
    "digits:5-9",
    "digits:parity",
    "digits:ge5",
    "mnist:0-4",
    "mnist:parity",
    "mnist:0,2,4",
    "mnist:4,2,0",
    "mnist:0-2,7",
    "mnist:0,1",
    "fashionmnist",
    "kmnist",
    "cifar10",
    "cifar100:ge50",
    "moons",
    "moons?n=2000&noise=0.2",
    "circles?factor=0.3",
    "spirals?arms=3&turns=1.5",
    "xor?noise=0.05",
    "blobs:0-2?centers=5&std=0.25",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_text_round_trips(text):
    spec = parse_task(text)
    assert str(spec) == text
    assert parse_task(str(spec)) == spec
    assert hash(spec) == hash(parse_task(text))


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("  MNIST:0-4 ", "mnist:0-4"),
        ("mnist:0,1,2,3,4", "mnist:0-4"),
        ("digits:all", "digits"),
        ("digits:", "digits"),
        ("Fashion-MNIST", "fashionmnist"),
        ("cifar-10:parity", "cifar10:parity"),
        ("moons?noise=0.1", "moons"),  # default value dropped
        ("moons?noise=0.2&n=500", "moons?n=500&noise=0.2"),  # keys sorted
        ("moons?n=2000.0", "moons?n=2000"),  # whole floats accepted for ints
        ("circles?noise=1", "circles?noise=1.0"),
    ],
)
def test_non_canonical_text_is_normalised(text, canonical):
    spec = parse_task(text)
    assert str(spec) == canonical
    assert parse_task(canonical) == spec


def test_spec_fields_and_class_counts():
    s = parse_task("digits:5-9")
    assert (s.dataset, s.rule, s.classes) == ("digits", "subset", (5, 6, 7, 8, 9))
    assert s.num_classes == 5 and s.base_num_classes == 10
    assert parse_task("mnist:4,2,0").classes == (4, 2, 0)
    assert parse_task("digits:parity").num_classes == 2
    g = parse_task("digits:ge5")
    assert (g.rule, g.threshold, g.num_classes) == ("ge", 5, 2)
    assert parse_task("cifar100").num_classes == 100
    assert parse_task("spirals?arms=4").num_classes == 4
    assert parse_task("blobs").num_classes == 3
    assert parse_task("moons?n=300").param_dict == {"n": 300, "noise": 0.1}


def test_make_and_parse_agree_and_spec_passes_through():
    spec = TaskSpec.make("moons", n=2000, noise=0.2)
    assert spec == parse_task("moons?n=2000&noise=0.2")
    assert parse_task(spec) is spec


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("imagenet", "known datasets: digits, mnist"),
        ("digits:odd", "unknown label rule"),
        ("digits:0-12", "out of range; allowed 0..9"),
        ("digits:9-5", "must be ascending"),
        ("digits:1,1", "repeats a class"),
        ("digits:ge0", "allowed ge1..ge9"),
        ("digits:ge10", "allowed ge1..ge9"),
        ("mnist?n=5", "takes no ?parameters"),
        ("moons?width=3", "accepts: n, noise"),
        ("moons?noise=-1", "out of range"),
        ("moons?noise=abc", "not a number"),
        ("moons?noise=nan", "must be finite"),
        ("moons?n=10.5", "whole number"),
        ("moons?n=5", "out of range"),
        ("moons?noise", "key=value"),
        ("moons?n=100&n=200", "given twice"),
        ("blobs:0-4", "out of range; allowed 0..2"),
        ("digits 0-4", "cannot parse task"),
        ("", "cannot parse task"),
    ],
)
def test_bad_text_is_a_clear_value_error(text, fragment):
    with pytest.raises(ValueError, match=None) as info:
        parse_task(text)
    assert fragment in str(info.value)


def test_wrong_type_is_type_error():
    with pytest.raises(TypeError, match="text or TaskSpec"):
        parse_task(42)


def test_direct_construction_is_validated():
    with pytest.raises(ValueError, match="canonical name"):
        TaskSpec("MNIST")
    with pytest.raises(ValueError, match="equals its default"):
        TaskSpec("moons", params=(("noise", 0.1),))
    with pytest.raises(ValueError, match="only used by rule 'subset'"):
        TaskSpec("digits", classes=(1, 2))


def test_known_datasets_listed():
    names = known_datasets()
    for name in ("digits", "mnist", "fashionmnist", "kmnist", "cifar10", "cifar100"):
        assert name in names
    for name in ("moons", "circles", "spirals", "xor", "blobs"):
        assert name in names
