"""datasets.py: built-in sets, CSV and .npy files, accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.client import datasets


def test_xor_is_the_article_table():
    x, y, name = datasets.xor()
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.ravel().tolist() == [0, 1, 1, 0]


def test_article_network_is_the_articles():
    net = datasets.article()
    assert net.layer_sizes == [2, 4, 1]
    assert [w.tolist() for w in net.layers] == [[[0.2, 0.6], [0.5, 0.7], [0.4, 0.9], [0.8, 0.3]],
                                                [[0.6, 0.7, 0.3, 0.4]]]
    assert net.architecture == dict(hidden="sigmoid", output="sigmoid", loss="mse", bias=False,
                                    gradient_mode="article")
    net.layers[0][0, 0] = 9.0  # every call gives fresh arrays
    assert datasets.article().layers[0][0, 0] == 0.2


def test_digits_and_iris():
    pytest.importorskip("sklearn")
    x, y, _ = datasets.digits()
    assert x.shape == (1797, 64) and y.shape == (1797, 10)
    assert x.min() == 0 and x.max() == 1 and (y.sum(axis=1) == 1).all()
    x, y, _ = datasets.iris()
    assert x.shape == (150, 4) and y.shape == (150, 3)
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(x.std(axis=0), 1)


def test_unknown_builtin():
    with pytest.raises(datasets.DataError, match="xor, digits, iris"):
        datasets.builtin("mnist")


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "a.csv").write_text("a,b,t1,t2\n1,2,0,1\n3,4,1,0\n")
    (tmp_path / "b.csv").write_text("1, 2\n3, 4\n\n")
    data = datasets.load_csv(tmp_path / "a.csv", 2)
    assert data.inputs.tolist() == [[1, 2], [3, 4]] and data.targets.tolist() == [[0, 1], [1, 0]]
    assert datasets.load_array(tmp_path / "b.csv").tolist() == [[1, 2], [3, 4]]
    assert datasets.load_csv(tmp_path / "b.csv", 0).targets is None
    with pytest.raises(datasets.DataError, match="--target-columns"):
        datasets.load_csv(tmp_path / "b.csv", 2)


def test_npy_files(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(3.0))
    np.save(tmp_path / "m.npy", np.ones((2, 5), dtype=np.float32))
    np.save(tmp_path / "c.npy", np.ones((2, 2, 2)))
    assert datasets.load_array(tmp_path / "v.npy").shape == (3, 1)
    m = datasets.load_array(tmp_path / "m.npy")
    assert m.shape == (2, 5) and m.dtype == np.float64
    with pytest.raises(datasets.DataError, match="2-D"):
        datasets.load_array(tmp_path / "c.npy")
    (tmp_path / "x.txt.gz").write_text("")
    with pytest.raises(datasets.DataError, match=".npy or .csv"):
        datasets.load_array(tmp_path / "x.txt.gz")
    (tmp_path / "bad.csv").write_text("1,2\n3,four\n")
    with pytest.raises(datasets.DataError, match="not a file of numbers"):
        datasets.load_array(tmp_path / "bad.csv")


def test_accuracy():
    assert datasets.accuracy(np.array([[0.9], [0.2]]), np.array([[1], [1]])) == 0.5
    assert datasets.accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.eye(2)[[1, 0]]) == 1.0
