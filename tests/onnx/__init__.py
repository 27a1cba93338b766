"""ONNX export and import, scikit-learn's MLPs in and out, the Triton repository, the estimator
(client/onnx.py, client/sklearn.py, client/interchange.py)."""
