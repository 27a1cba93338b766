"""The page's data sets (service/web/datasets.py): shapes, classes, ranges, seeds, the held-out
share, pasted CSV, and a message naming the field of each value out of range."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.service.web import datasets
from jitnet.service.web.http_status import BadRequest


@pytest.mark.parametrize("kind", ["circle", "moons", "spiral"])
def test_two_class_sets_are_balanced_in_the_plane_and_seeded(kind):
    points = datasets.generate(kind, points=201, noise=0.0, seed=4)
    assert points.inputs.shape == (201, 2) and points.targets.shape == (201, 1)
    labels = points.targets[:, 0]
    assert set(labels) == {0.0, 1.0} and abs(labels.sum() - 100.5) <= 0.5  # half each
    assert np.abs(points.inputs).max() <= 1.0 + 1e-12  # no noise: inside [-1, 1]^2
    again = datasets.generate(kind, points=201, noise=0.0, seed=4)
    np.testing.assert_array_equal(again.inputs, points.inputs)
    other = datasets.generate(kind, points=201, noise=0.0, seed=5)
    assert not np.array_equal(other.inputs, points.inputs)
    # Rows in a random order, not grouped by class (one sample at a time learns in order).
    assert 0 < labels[:100].sum() < 100


def test_circle_is_a_disc_inside_a_ring():
    points = datasets.generate("circle", points=400, noise=0.0)
    radius = np.hypot(points.inputs[:, 0], points.inputs[:, 1])
    inside = points.targets[:, 0] == 1
    assert radius[inside].max() <= 0.5 and radius[~inside].min() >= 0.7


def test_noise_moves_the_points_by_about_its_size():
    clean = datasets.generate("moons", points=2000, noise=0.0, seed=1)
    noisy = datasets.generate("moons", points=2000, noise=0.2, seed=1)
    # Same seed, same draws before the noise: the difference is the noise, std 0.2 each way.
    assert np.std(noisy.inputs - clean.inputs) == pytest.approx(0.2, rel=0.1)


def test_clusters_have_one_hot_targets_beyond_two_classes():
    three = datasets.generate("clusters", points=300, classes=3, noise=0.0)
    assert three.targets.shape == (300, 3) and three.name == "3 Gaussian clusters"
    assert (three.targets.sum(axis=1) == 1).all()
    assert three.targets.sum(axis=0).tolist() == [100, 100, 100]
    means = [three.inputs[three.targets[:, k] == 1].mean(axis=0) for k in range(3)]
    for k, mean in enumerate(means):  # each blob around its centre on the 0.55 circle
        angle = 2 * np.pi * k / 3 + np.pi / 4
        np.testing.assert_allclose(mean, 0.55 * np.array([np.cos(angle), np.sin(angle)]),
                                   atol=0.06)  # 0.15 / sqrt(100) = 0.015 per mean: 4 sigma
    two = datasets.generate("clusters", points=10, classes=2)
    assert two.targets.shape == (10, 1)


def test_the_held_out_share_is_the_last_rows_and_never_in_training():
    whole = datasets.generate("spiral", points=100, seed=3)
    split = datasets.generate("spiral", points=100, seed=3, validation_fraction=0.2)
    assert (len(split.inputs), len(split.validation_inputs)) == (80, 20)
    np.testing.assert_array_equal(np.vstack([split.inputs, split.validation_inputs]),
                                  whole.inputs)
    np.testing.assert_array_equal(split.validation_targets, whole.targets[80:])


def test_xor_is_the_article_s_table_as_it_is():
    xor = datasets.generate("xor", points=999, noise=0.5, validation_fraction=0.5)
    assert xor.inputs.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert xor.targets.tolist() == [[0], [1], [1], [0]] and len(xor.validation_inputs) == 0


def test_pasted_csv_with_a_header_and_the_targets_last():
    points = datasets.generate("csv", csv="x,y,t\n1,2,0\n3,4,1\n\n5,6,1\n", target_columns=1,
                               validation_fraction=1 / 3)
    assert points.inputs.tolist() == [[1, 2], [3, 4]] and points.targets.tolist() == [[0], [1]]
    assert points.validation_inputs.tolist() == [[5, 6]]


@pytest.mark.parametrize("kwargs, words", [
    ({"kind": "donut"}, "kind 'donut' is not one of xor, circle"),
    ({"kind": "moons", "points": 3}, "points is 3"),
    ({"kind": "moons", "points": 10**6}, "points is 1000000; it must be between 4 and 5000"),
    ({"kind": "moons", "noise": -0.1}, "noise is -0.1"),
    ({"kind": "clusters", "classes": 9}, "classes is 9"),
    ({"kind": "moons", "validation_fraction": 0.95}, "validation_fraction is 0.95"),
    ({"kind": "csv", "csv": ""}, "csv is empty"),
    ({"kind": "csv", "csv": "1,2\n3"}, "csv: not comma-separated numbers"),
    ({"kind": "csv", "csv": "1,2\n3,x"}, "csv: not comma-separated numbers"),
    ({"kind": "csv", "csv": "1,2\n3,inf"}, "row 2, column 2 is not a finite number"),
    ({"kind": "csv", "csv": "1,2", "target_columns": 2}, "target_columns is 2; the CSV has 2"),
    ({"kind": "csv", "csv": "1,2", "validation_fraction": 0.9}, "leaves no row to train on"),
])
def test_values_out_of_range_name_their_field(kwargs, words):
    with pytest.raises(BadRequest) as info:
        datasets.generate(kwargs.pop("kind"), **kwargs)
    assert words in info.value.message and int(info.value.status) == 400
