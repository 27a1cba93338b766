"""scikit-learn and jitnet: fitted MLPs as jitnet models, and estimators that train on a jitnet
server.

    from jitnet.client.sklearn import JitnetClassifier, from_sklearn

    clf = JitnetClassifier((64,), solver="adam", max_iter=50, random_state=0)  # JITNET_TARGET
    clf.fit(X_train, y_train).score(X_test, y_test)
    client.import_sklearn(fitted_mlp, "mlp")                                   # from_sklearn

**from_sklearn** reads a fitted MLPClassifier or MLPRegressor: its `coefs_` are [fan_in,
fan_out] (jitnet's W is their transpose), its hidden activation (identity, logistic, tanh,
relu: jitnet's linear, sigmoid, tanh, relu), its output (logistic for a binary or multilabel
classifier, one sigmoid column per label; softmax for multiclass; identity for a regressor) and
a matching loss (cross-entropy, or MSE: scikit-learn's squared error halved is jitnet's per
output). A classifier's classes go into the metadata as JSON (`classes`); a binary model's one
output is the probability of classes[1].

**JitnetClassifier / JitnetRegressor** take MLPClassifier's and MLPRegressor's parameters
where jitnet means the same (hidden_layer_sizes, activation, solver, alpha, batch_size,
learning_rate_init, max_iter, shuffle, random_state, tol, momentum, nesterovs_momentum,
early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change), plus where the
server is (`target`, default JITNET_TARGET or 127.0.0.1:50051; `token`, default JITNET_TOKEN)
and `model_id`. fit is one CreateModel and one Train call: the optimizer (solver "sgd", "adam",
or jitnet's "adamw"), weight decay (alpha, as scikit-learn's L2 term: alpha / batch_size per
step on weights, never biases; AdamW's decoupled decay takes alpha as it is), and the stopping
rule, which is scikit-learn's: without early_stopping, stop once the training loss has not
improved by tol for n_iter_no_change epochs; with it, hold out validation_fraction of the rows
(stratified for a classifier, drawn from random_state), stop on the validation accuracy (R²'s
order, the validation loss, for a regressor) and keep the best epoch's weights. Adam is
torch's (epsilon added to sqrt(v_hat)), not scikit-learn's epsilon-hat form: the same to about
1e-3 relative where gradients are tiny.

**The estimator's model on the server.** Each fit creates one model and the estimator owns it:
without `model_id` its id is `sklearn-` and random hex, and it is deleted when the estimator
fits again, when `delete_model()` is called, or when the estimator is garbage-collected (also
at interpreter exit; best effort, never raising). With `model_id` the model is kept under that
name for serving after the program ends: a new fit replaces it if an estimator made it (its
metadata says so), and refuses to touch a model of that name made otherwise. A copy or a
pickle refers to the same model by id and does not own it. For searches (GridSearchCV clones
fit many times) leave `model_id` unset: every clone's model goes with the clone.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
import weakref

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from jitnet.v1 import jitnet_pb2 as pb

from . import wire
from .client import DEFAULT_TARGET, Client
from .errors import AlreadyExists, NotFound, UnsupportedModel
from .interchange import NetworkSpec

# scikit-learn's activation names -> jitnet's
ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
SOLVERS = {"sgd": pb.OPTIMIZER_SGD, "adam": pb.OPTIMIZER_ADAM, "adamw": pb.OPTIMIZER_ADAMW}
ESTIMATOR_KEY = "sklearn.estimator"  # model metadata: which estimator made (and owns) it
DELETE_TIMEOUT = 5.0  # seconds: deleting a model when its estimator goes away


def _plain(values) -> list:
    """Class labels as JSON values (numpy scalars as Python's)."""
    return [v.item() if isinstance(v, np.generic) else v for v in np.asarray(values).tolist()]


def from_sklearn(estimator) -> NetworkSpec:
    """The network of a fitted MLPClassifier or MLPRegressor (UnsupportedModel for anything
    else, or an MLP jitnet cannot compute)."""
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        raise UnsupportedModel(f"{type(estimator).__name__} is not an MLPClassifier or "
                               "MLPRegressor; export other models through ONNX if they are "
                               "chains of dense layers")
    check_is_fitted(estimator, "coefs_")
    kind = type(estimator).__name__
    hidden = ACTIVATIONS.get(estimator.activation)
    output = {"logistic": "sigmoid", "softmax": "softmax", "identity": "linear"}.get(
        estimator.out_activation_)
    if hidden is None or output is None:
        raise UnsupportedModel(f"{kind} with activation {estimator.activation!r} and output "
                               f"{estimator.out_activation_!r}: jitnet computes identity, "
                               "logistic, tanh and relu layers under a logistic, softmax or "
                               "identity output")
    coefs, intercepts = estimator.coefs_, estimator.intercepts_
    dtype = "float32" if coefs[0].dtype == np.float32 else "float64"
    layers = tuple((np.asarray(w, np.float64).T.copy(), np.asarray(b, np.float64).copy())
                   for w, b in zip(coefs, intercepts, strict=True))
    sizes = (coefs[0].shape[0], *(w.shape[1] for w in coefs))
    import sklearn

    metadata = {"source": f"scikit-learn {sklearn.__version__} {kind}"}
    if isinstance(estimator, MLPClassifier):
        metadata["classes"] = json.dumps(_plain(estimator.classes_))
    loss = "cross_entropy" if isinstance(estimator, MLPClassifier) else "mse"
    return NetworkSpec(tuple(int(s) for s in sizes), hidden if len(sizes) > 2 else "sigmoid",
                       output, loss, True, layers, dtype, "exact", metadata)


def _delete_quietly(client: Client, model_id: str) -> None:
    """A finalizer's delete: never raises (the server may be gone already)."""
    try:
        client.delete_model(model_id, timeout=DELETE_TIMEOUT)
    except Exception:  # noqa: BLE001, S110 - best effort at garbage collection and exit
        pass


class _JitnetMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the server, one fit."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate_init=0.001, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, target=None,
                 token=None, model_id=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.target = target
        self.token = token
        self.model_id = model_id

    # -- the server --

    def _connection(self) -> Client:
        target = self.target or os.environ.get("JITNET_TARGET") or DEFAULT_TARGET
        token = self.token or os.environ.get("JITNET_TOKEN") or None
        client = self.__dict__.get("_client")
        if client is None or self.__dict__.get("_client_for") != (target, token):
            client = Client(target, token=token)
            self._client, self._client_for = client, (target, token)
        return client

    def delete_model(self) -> None:
        """Deletes the model of the last fit from the server (the estimator is unfitted
        after). A no-op when there is none."""
        model_id = self.__dict__.get("model_id_")
        finalizer = self.__dict__.pop("_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        if model_id is not None:
            try:
                self._connection().delete_model(model_id)
            except NotFound:
                pass
            del self.model_id_

    def __getstate__(self):
        # A copy or a pickle names the same model but owns neither it nor this connection.
        state = self.__dict__.copy()
        for name in ("_client", "_client_for", "_finalizer"):
            state.pop(name, None)
        return state

    def _replace_previous(self, client: Client) -> str:
        """Deletes what the last fit made (and, for a named model, a model of that name an
        estimator made); returns the id this fit creates."""
        finalizer = self.__dict__.pop("_finalizer", None)
        if finalizer is not None:
            finalizer()  # deletes the temporary model of the last fit
        if self.model_id is None:
            return f"sklearn-{secrets.token_hex(8)}"
        try:
            existing = client.get_model(self.model_id, min_version=0)
        except NotFound:
            return self.model_id
        if ESTIMATOR_KEY not in existing.metadata:
            raise AlreadyExists(f"model '{self.model_id}' exists and no estimator made it; "
                                "choose another model_id, or delete it first")
        client.delete_model(self.model_id)
        return self.model_id

    # -- checks --

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if np.ndim(sizes) == 0 else list(sizes)
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
               for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be whole numbers of at least 1, got "
                             f"{self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    def _check_parameters(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of "
                             f"{', '.join(ACTIVATIONS)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r}: jitnet trains with 'sgd', 'adam' or "
                             "'adamw' (no 'lbfgs')")
        for name in ("max_iter", "n_iter_no_change"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("learning_rate_init", "beta_1", "beta_2", "epsilon", "alpha", "tol",
                     "momentum", "validation_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a number at least 0, got {value!r}")
        if not self.learning_rate_init > 0:
            raise ValueError(f"learning_rate_init must be above 0, got {self.learning_rate_init}")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1):
            raise ValueError("beta_1 and beta_2 must be in [0, 1)")
        if self.early_stopping and not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got "
                             f"{self.validation_fraction}")
        if self.batch_size != "auto" and (
                isinstance(self.batch_size, bool) or not isinstance(self.batch_size,
                                                                    (int, np.integer))
                or self.batch_size < 1):
            raise ValueError(f"batch_size must be 'auto' or a whole number of at least 1, got "
                             f"{self.batch_size!r}")

    # -- fit --

    def _fit(self, X, Y: np.ndarray, output: str, loss: str, stratify):
        """Creates the model and trains it on X [n, n_in], Y [n, n_out]."""
        self._check_parameters()
        hidden = self._hidden_sizes()
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        x_val = y_val = None
        if self.early_stopping:
            X, x_val, Y, y_val, *_ = train_test_split(
                X, Y, random_state=rng, test_size=self.validation_fraction, stratify=stratify)
        rows = X.shape[0]
        batch = min(200, rows) if self.batch_size == "auto" else min(int(self.batch_size), rows)
        client = self._connection()
        model_id = self._replace_previous(client)
        n_in, n_out = X.shape[1], Y.shape[1]
        model = client.create_model(
            [n_in, *hidden, n_out], hidden=ACTIVATIONS[self.activation], output=output,
            loss=loss, init="xavier", seed=seed, model_id=model_id,
            metadata={ESTIMATOR_KEY: type(self).__name__})
        self.model_id_ = model.id
        if self.model_id is None:
            self._finalizer = weakref.finalize(self, _delete_quietly, client, model.id)
        request = self._train_request(model.id, X, Y, x_val, y_val, batch, seed, client.raw)
        losses, validations, last = [], [], None
        for msg in client._train_messages(request, None):
            losses.append(msg.loss)
            if msg.HasField("validation_loss"):
                validations.append(msg)
            last = msg
        if self.early_stopping and not validations:
            raise UnsupportedModel(f"the server at {client.target} reported no validation loss: "
                                   "it predates Train's validation and early stopping; fit "
                                   "without early_stopping")
        trained = client.get_model(model.id, include_weights=True)
        wanted = pb.Optimizer.Name(SOLVERS[self.solver])[len("OPTIMIZER_"):].lower()
        if trained.optimizer != wanted:
            raise UnsupportedModel(f"the server at {client.target} trained with "
                                   f"{trained.optimizer} instead of {wanted}: it predates "
                                   "Train's optimizers; use solver='sgd'")
        self.n_features_in_ = n_in
        self.n_outputs_ = n_out
        self.n_layers_ = len(hidden) + 2
        self.out_activation_ = {"sigmoid": "logistic", "softmax": "softmax",
                                "linear": "identity"}[output]
        self.coefs_ = [w.T.copy() for w, _ in trained.layers]
        self.intercepts_ = [b.copy() for _, b in trained.layers]
        self.loss_curve_ = losses
        self.loss_ = losses[-1] if losses else float("nan")
        self.n_iter_ = last.epoch if last is not None else 0
        self.t_ = rows * self.n_iter_
        self.validation_scores_ = (self._validation_scores(validations, y_val)
                                   if self.early_stopping else None)
        if self.early_stopping:
            best = last.best_epoch or len(self.validation_scores_)
            self.best_validation_score_ = self.validation_scores_[best - 1]
            self.best_loss_ = None
        else:
            self.best_loss_ = min(losses) if losses else float("nan")
        if last is not None and last.stop_reason == pb.STOP_REASON_EPOCHS:
            warnings.warn(f"{type(self).__name__}: max_iter ({self.max_iter}) reached and "
                          "training has not converged yet", ConvergenceWarning, stacklevel=3)
        return self

    def _train_request(self, model_id, X, Y, x_val, y_val, batch, seed, raw) -> pb.TrainRequest:
        optimizer = SOLVERS[self.solver]
        sgd = optimizer == pb.OPTIMIZER_SGD
        request = wire.train_request(model_id, X, Y, self.max_iter, self.learning_rate_init,
                                     batch, self.momentum if sgd else 0.0, bool(self.shuffle),
                                     seed, 0.0, 1, raw)
        request.optimizer = optimizer
        if sgd:
            request.nesterov = bool(self.nesterovs_momentum and self.momentum > 0)
        else:
            request.beta1, request.beta2 = float(self.beta_1), float(self.beta_2)
            request.epsilon = float(self.epsilon)
        # scikit-learn's L2 term, 0.5 * alpha * |W|^2 / batch, is torch's weight_decay of
        # alpha / batch on the weights; AdamW's decoupled decay takes alpha as it is.
        request.weight_decay = float(self.alpha if optimizer == pb.OPTIMIZER_ADAMW
                                     else self.alpha / batch)
        if x_val is not None:
            request.validation_inputs.CopyFrom(wire.to_tensor(x_val, raw=raw))
            request.validation_targets.CopyFrom(wire.to_tensor(y_val, raw=raw))
        monitor = (self._validation_monitor() if self.early_stopping else pb.MONITOR_LOSS)
        request.early_stopping.CopyFrom(pb.EarlyStopping(
            patience=int(self.n_iter_no_change), min_delta=float(self.tol),
            restore_best=bool(self.early_stopping), monitor=monitor))
        return request

    def _validation_monitor(self) -> int:
        raise NotImplementedError

    def _validation_scores(self, messages, y_val) -> list[float]:
        raise NotImplementedError

    # -- predict --

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "model_id_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._connection().predict(self.model_id_, X)


class JitnetClassifier(ClassifierMixin, _JitnetMLP):
    """MLPClassifier's interface, trained and served by a jitnet server: a softmax output and
    cross-entropy for several classes, one sigmoid output for two (the probability of
    classes_[1]) or per label of a multilabel target."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, dtype=np.float64,
                             y_numeric=False)
        if y.ndim == 2 and y.shape[1] == 1:  # a column of labels: MLPClassifier's warning
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        binarizer = LabelBinarizer().fit(y)
        if len(binarizer.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two classes in y, got "
                             f"{len(binarizer.classes_)} class")
        self._label_binarizer = binarizer
        self.classes_ = binarizer.classes_
        Y = binarizer.transform(y).astype(np.float64)
        multiclass = binarizer.y_type_ == "multiclass"
        stratify = y if multiclass or binarizer.y_type_ == "binary" else None
        return self._fit(X, Y, "softmax" if multiclass else "sigmoid", "cross_entropy",
                         stratify)

    def _validation_monitor(self) -> int:
        return pb.MONITOR_VALIDATION_ACCURACY

    def _validation_scores(self, messages, y_val) -> list[float]:
        return [m.validation_accuracy for m in messages]

    def predict_proba(self, X) -> np.ndarray:
        """[n, n_classes] probabilities (two columns [1 - p, p] for a binary target)."""
        p = self._outputs(X)
        if self._label_binarizer.y_type_ == "binary":
            p = np.hstack([1.0 - p, p])
        return p

    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        p = self._outputs(X)
        return self._label_binarizer.inverse_transform(p, threshold=0.5)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class JitnetRegressor(RegressorMixin, _JitnetMLP):
    """MLPRegressor's interface, trained and served by a jitnet server: a linear output and
    MSE (0.5 * sum of squared errors per row: scikit-learn's squared error for one target)."""

    def fit(self, X, y):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        self._y_1d = y.ndim == 1
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        return self._fit(X, np.asarray(Y, np.float64), "linear", "mse", None)

    def _validation_monitor(self) -> int:
        return pb.MONITOR_VALIDATION_LOSS

    def _validation_scores(self, messages, y_val) -> list[float]:
        # R² from the validation loss: the loss is 0.5 * sum of squares per row, averaged, so
        # the residual sum of squares is 2 * rows * loss (over every output: with several, the
        # R² of all outputs pooled, weighted by their variance).
        total = float(((y_val - y_val.mean(axis=0)) ** 2).sum())
        rows = y_val.shape[0]
        return [1.0 - 2.0 * rows * m.validation_loss / total if total > 0 else float("nan")
                for m in messages]

    def predict(self, X) -> np.ndarray:
        y = self._outputs(X)
        return y.ravel() if self._y_1d else y

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
