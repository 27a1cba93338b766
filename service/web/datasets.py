"""The page's data: the article's XOR, generated 2-D sets like TensorFlow Playground's (circle,
two moons, spiral, Gaussian clusters) with noise and a validation share, or pasted CSV.

    points = generate("spiral", points=300, noise=0.1, seed=1, validation_fraction=0.2)
    points.inputs [n, 2], points.targets [n, 1] (0 or 1), points.validation_inputs, ...

Generated sets lie in about [-1, 1] x [-1, 1] (a sigmoid's comfortable range), their rows in a
seeded random order (one sample at a time, rows grouped by class would teach one class, then
the other) and the validation rows are the last share of that order. The same arguments give
the same points. Two classes have one target column (0 or 1); more have one-hot targets, one
column per class. Nothing here calls the server: the page sends these rows with its Train.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jitnet.client import datasets as client_datasets

from .http_status import BadRequest

KINDS = ("xor", "circle", "moons", "spiral", "clusters", "csv")
MAX_POINTS = 5000  # generated points; a pasted CSV is bounded by the request's size
MAX_NOISE = 1.0  # the jitter's standard deviation, in units of the plane (about 2 wide)
MAX_VALIDATION_FRACTION = 0.9
MAX_CLASSES = 6


@dataclasses.dataclass(frozen=True)
class Points:
    name: str
    inputs: np.ndarray  # [n, n_in], the rows to train on
    targets: np.ndarray  # [n, n_out]
    validation_inputs: np.ndarray  # [m, n_in], held out (m may be 0)
    validation_targets: np.ndarray  # [m, n_out]

    def to_json(self) -> dict:
        return {"name": self.name, "inputs": self.inputs.tolist(),
                "targets": self.targets.tolist(),
                "validation_inputs": self.validation_inputs.tolist(),
                "validation_targets": self.validation_targets.tolist()}


def generate(kind: str, *, points: int = 200, noise: float = 0.1, seed: int = 0,
             validation_fraction: float = 0.0, classes: int = 2, csv: str = "",
             target_columns: int = 1) -> Points:
    """A data set by name (KINDS); BadRequest naming the field for a value out of range."""
    if kind not in KINDS:
        raise BadRequest(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    _within("validation_fraction", validation_fraction, 0.0, MAX_VALIDATION_FRACTION)
    if kind == "xor":  # the article's four rows, as they are: no noise, nothing held out
        data = client_datasets.xor()
        empty = np.zeros((0, 2))
        return Points("xor", data.inputs, data.targets, empty, np.zeros((0, 1)))
    if kind == "csv":
        inputs, targets = _csv(csv, target_columns)
        name = "pasted CSV"
    else:
        _within("points", points, 4, MAX_POINTS)
        _within("noise", noise, 0.0, MAX_NOISE)
        _within("classes", classes, 2, MAX_CLASSES)
        rng = np.random.default_rng(seed)
        make = {"circle": _circle, "moons": _moons, "spiral": _spiral}.get(kind)
        if make is not None:
            inputs, labels = make(rng, int(points))
            classes = 2
        else:
            inputs, labels = _clusters(rng, int(points), int(classes))
        inputs = inputs + rng.normal(0.0, float(noise), inputs.shape)
        targets = (labels.reshape(-1, 1).astype(np.float64) if classes == 2
                   else client_datasets.one_hot(labels, classes))
        order = rng.permutation(len(inputs))
        inputs, targets = inputs[order], targets[order]
        name = kind if kind != "clusters" else f"{classes} Gaussian clusters"
    held = int(round(validation_fraction * len(inputs)))
    if held and len(inputs) - held < 1:
        raise BadRequest(f"validation_fraction {validation_fraction} leaves no row to train on")
    cut = len(inputs) - held
    return Points(name, inputs[:cut], targets[:cut], inputs[cut:], targets[cut:])


def _within(field: str, value, low, high) -> None:
    if not low <= value <= high:
        raise BadRequest(f"{field} is {value}; it must be between {low} and {high}")


def _circle(rng, n: int):
    """Label 1 inside radius 0.5, label 0 on the ring from 0.7 to 1."""
    inside = n // 2
    radius = np.concatenate([rng.uniform(0.0, 0.5, inside), rng.uniform(0.7, 1.0, n - inside)])
    angle = rng.uniform(0.0, 2 * np.pi, n)
    labels = np.concatenate([np.ones(inside), np.zeros(n - inside)])
    return np.column_stack([radius * np.sin(angle), radius * np.cos(angle)]), labels


def _moons(rng, n: int):
    """scikit-learn's two moons, moved and scaled from [-1, 2] x [-0.5, 1] onto [-1, 1]."""
    outer = n // 2
    t = rng.uniform(0.0, np.pi, n)
    x = np.where(np.arange(n) < outer, np.cos(t), 1.0 - np.cos(t))
    y = np.where(np.arange(n) < outer, np.sin(t), 0.5 - np.sin(t))
    labels = (np.arange(n) >= outer).astype(np.float64)
    return np.column_stack([(x - 0.5) / 1.5, (y - 0.25) / 1.5]), labels


def _spiral(rng, n: int):
    """Two arms winding 1.75 turns out from the centre (Playground's spiral), radius up to 1."""
    per_arm = n // 2
    i = np.concatenate([np.arange(per_arm), np.arange(n - per_arm)]).astype(np.float64)
    arm_length = np.concatenate([np.full(per_arm, per_arm), np.full(n - per_arm, n - per_arm)])
    radius = i / arm_length
    turn = np.concatenate([np.zeros(per_arm), np.full(n - per_arm, np.pi)])
    angle = 1.75 * 2 * np.pi * radius + turn
    labels = np.concatenate([np.ones(per_arm), np.zeros(n - per_arm)])
    return np.column_stack([radius * np.sin(angle), radius * np.cos(angle)]), labels


def _clusters(rng, n: int, classes: int):
    """One Gaussian blob per class (standard deviation 0.15), centres on a circle of radius
    0.55."""
    labels = np.arange(n) % classes
    angle = 2 * np.pi * labels / classes + np.pi / 4
    centres = 0.55 * np.column_stack([np.cos(angle), np.sin(angle)])
    return centres + rng.normal(0.0, 0.15, (n, 2)), labels


def _csv(text: str, target_columns: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        table = client_datasets.parse_csv(text)
    except ValueError as e:
        raise BadRequest(f"csv: not comma-separated numbers ({e})") from None
    if table.size == 0:
        raise BadRequest("csv is empty: paste rows of numbers, the targets in the last columns")
    if not 1 <= target_columns < table.shape[1]:
        raise BadRequest(f"target_columns is {target_columns}; the CSV has {table.shape[1]} "
                         "columns and needs at least one input column and one target column")
    bad = np.argwhere(~np.isfinite(table))
    if bad.size:
        row, column = bad[0]
        raise BadRequest(f"csv: row {row + 1}, column {column + 1} is not a finite number")
    return table[:, :-target_columns], table[:, -target_columns:]
