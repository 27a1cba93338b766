"""Data for `jitnet train` and `jitnet predict`: built-in sets and CSV / .npy files.

Built-in sets (inputs X [n, n_in], targets Y [n, n_out], float64):

    xor     the article's table: 4 rows, 2 inputs, 1 target
    digits  scikit-learn's 8x8 digits: 1797 rows, 64 pixels / 16, one-hot targets over 10
    iris    scikit-learn's iris: 150 rows, 4 standardised features, one-hot targets over 3

ARTICLE_HIDDEN and ARTICLE_OUTPUT are the weights of the article's 2-4-1 network (no bias).

digits and iris need scikit-learn (`pip install scikit-learn`); it is not a dependency of
jitnet, so it is imported only when one of them is asked for.

Files: `.npy` (numpy.save, no pickles) or `.csv` (comma-separated numbers; a first line that
is not numbers is a header and skipped). In a CSV holding inputs and targets together, the
last `target_columns` columns are the targets.

The article's network (api.md, "The article's worked example") is here too, for the demo,
`jitnet create --article` and tests: `article()`, from ARTICLE_HIDDEN and ARTICLE_OUTPUT.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class DataError(ValueError):
    """A data set or file cannot be loaded; the message says what to do."""


class DataSet(NamedTuple):
    inputs: np.ndarray  # [n, n_in]
    targets: np.ndarray | None  # [n, n_out]
    name: str


# The article's network (2-4-1, sigmoid, no bias): input -> hidden [4, 2], hidden -> output [1, 4].
ARTICLE_HIDDEN = [[0.2, 0.6], [0.5, 0.7], [0.4, 0.9], [0.8, 0.3]]
ARTICLE_OUTPUT = [[0.6, 0.7, 0.3, 0.4]]


def xor() -> DataSet:
    inputs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    targets = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return DataSet(inputs, targets, "xor")


# The article's weights, W [fan_out, fan_in]: W[j][i] joins input i to neuron j.
ARTICLE_HIDDEN = [[0.2, 0.6], [0.5, 0.7], [0.4, 0.9], [0.8, 0.3]]  # input -> hidden, [4, 2]
ARTICLE_OUTPUT = [[0.6, 0.7, 0.3, 0.4]]  # hidden -> output, [1, 4]


class ArticleNetwork(NamedTuple):
    layer_sizes: list[int]
    layers: list[np.ndarray]  # W per layer, no biases
    architecture: dict  # the create_model keywords: activations, loss, bias, gradient mode


def article() -> ArticleNetwork:
    """The article's 2-4-1 network: sigmoid everywhere, MSE, no biases, ARTICLE gradients, its
    weights (fresh arrays on each call). Create it with
    `client.create_model(net.layer_sizes, layers=net.layers, **net.architecture)`."""
    return ArticleNetwork(
        [2, 4, 1], [np.array(ARTICLE_HIDDEN), np.array(ARTICLE_OUTPUT)],
        dict(hidden="sigmoid", output="sigmoid", loss="mse", bias=False,
             gradient_mode="article"))


def _sklearn(name: str):
    try:
        from sklearn import datasets
    except ImportError:
        raise DataError(f"the {name} data set needs scikit-learn: "
                        "pip install scikit-learn") from None
    return datasets


def one_hot(labels, classes: int | None = None) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    classes = int(labels.max()) + 1 if classes is None else classes
    out = np.zeros((labels.size, classes), dtype=np.float64)
    out[np.arange(labels.size), labels] = 1.0
    return out


def digits() -> DataSet:
    data = _sklearn("digits").load_digits()
    return DataSet(np.asarray(data.data, dtype=np.float64) / 16.0, one_hot(data.target, 10),
                   "digits")


def iris() -> DataSet:
    data = _sklearn("iris").load_iris()
    x = np.asarray(data.data, dtype=np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return DataSet(x, one_hot(data.target, 3), "iris")


BUILTIN: dict[str, Callable[[], DataSet]] = {"xor": xor, "digits": digits, "iris": iris}


def builtin(name: str) -> DataSet:
    try:
        return BUILTIN[name]()
    except KeyError:
        raise DataError(f"no built-in data set {name!r}; use one of "
                        f"{', '.join(BUILTIN)}") from None


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A 2-D float64 array from a .npy or .csv file (a 1-D file becomes one column)."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in (".csv", ".txt"):
            array = _load_csv(path)
        else:
            raise DataError(f"{path}: use a .npy or .csv file")
        array = np.asarray(array, dtype=np.float64)
    except OSError as e:
        raise DataError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a file of numbers ({e})") from None
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array [rows, columns], got shape "
                        f"{list(array.shape)}")
    return array


def _load_csv(path: str) -> np.ndarray:
    with open(path, encoding="utf-8") as f:
        return parse_csv(f.read())


def parse_csv(text: str) -> np.ndarray:
    """Comma-separated numbers as a 2-D float64 array; a first line that is not numbers is a
    header and skipped. ValueError for anything else that is not numbers."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        try:
            [float(cell) for cell in lines[0].split(",")]
        except ValueError:
            lines = lines[1:]  # a header
    if not lines:
        return np.zeros((0, 0))
    return np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)


def load_csv(path: str | os.PathLike, target_columns: int) -> DataSet:
    """Inputs and targets from one CSV (or .npy): the last `target_columns` columns are targets."""
    array = load_array(path)
    if not 0 <= target_columns < array.shape[1]:
        raise DataError(f"{os.fspath(path)} has {array.shape[1]} columns; --target-columns "
                        f"{target_columns} must leave at least one input column")
    if target_columns == 0:
        return DataSet(array, None, os.path.basename(os.fspath(path)))
    return DataSet(array[:, :-target_columns], array[:, -target_columns:],
                   os.path.basename(os.fspath(path)))


def accuracy(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Share of rows classified right: argmax for several outputs, threshold 0.5 for one."""
    outputs, targets = np.atleast_2d(outputs), np.atleast_2d(targets)
    if outputs.shape[0] == 0:
        return float("nan")
    if outputs.shape[1] == 1:
        right = (outputs[:, 0] > 0.5) == (targets[:, 0] > 0.5)
    else:
        right = outputs.argmax(axis=1) == targets.argmax(axis=1)
    return float(np.mean(right))
