import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Activation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVATION_UNSPECIFIED: _ClassVar[Activation]
    ACTIVATION_SIGMOID: _ClassVar[Activation]
    ACTIVATION_TANH: _ClassVar[Activation]
    ACTIVATION_RELU: _ClassVar[Activation]
    ACTIVATION_LINEAR: _ClassVar[Activation]
    ACTIVATION_SOFTMAX: _ClassVar[Activation]

class Loss(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_UNSPECIFIED: _ClassVar[Loss]
    LOSS_MSE: _ClassVar[Loss]
    LOSS_CROSS_ENTROPY: _ClassVar[Loss]

class Init(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INIT_UNSPECIFIED: _ClassVar[Init]
    INIT_UNIFORM: _ClassVar[Init]
    INIT_XAVIER: _ClassVar[Init]
    INIT_HE: _ClassVar[Init]

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FLOAT64: _ClassVar[Dtype]
    DTYPE_FLOAT32: _ClassVar[Dtype]

class Optimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPTIMIZER_UNSPECIFIED: _ClassVar[Optimizer]
    OPTIMIZER_SGD: _ClassVar[Optimizer]
    OPTIMIZER_ADAM: _ClassVar[Optimizer]
    OPTIMIZER_ADAMW: _ClassVar[Optimizer]

class Monitor(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MONITOR_UNSPECIFIED: _ClassVar[Monitor]
    MONITOR_LOSS: _ClassVar[Monitor]
    MONITOR_VALIDATION_LOSS: _ClassVar[Monitor]
    MONITOR_VALIDATION_ACCURACY: _ClassVar[Monitor]

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_EPOCHS: _ClassVar[StopReason]
    STOP_REASON_TARGET_LOSS: _ClassVar[StopReason]
    STOP_REASON_EARLY_STOPPING: _ClassVar[StopReason]
    STOP_REASON_MIN_LEARNING_RATE: _ClassVar[StopReason]

class GradientMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRADIENT_MODE_UNSPECIFIED: _ClassVar[GradientMode]
    GRADIENT_MODE_EXACT: _ClassVar[GradientMode]
    GRADIENT_MODE_ARTICLE: _ClassVar[GradientMode]
ACTIVATION_UNSPECIFIED: Activation
ACTIVATION_SIGMOID: Activation
ACTIVATION_TANH: Activation
ACTIVATION_RELU: Activation
ACTIVATION_LINEAR: Activation
ACTIVATION_SOFTMAX: Activation
LOSS_UNSPECIFIED: Loss
LOSS_MSE: Loss
LOSS_CROSS_ENTROPY: Loss
INIT_UNSPECIFIED: Init
INIT_UNIFORM: Init
INIT_XAVIER: Init
INIT_HE: Init
DTYPE_UNSPECIFIED: Dtype
DTYPE_FLOAT64: Dtype
DTYPE_FLOAT32: Dtype
OPTIMIZER_UNSPECIFIED: Optimizer
OPTIMIZER_SGD: Optimizer
OPTIMIZER_ADAM: Optimizer
OPTIMIZER_ADAMW: Optimizer
MONITOR_UNSPECIFIED: Monitor
MONITOR_LOSS: Monitor
MONITOR_VALIDATION_LOSS: Monitor
MONITOR_VALIDATION_ACCURACY: Monitor
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_EPOCHS: StopReason
STOP_REASON_TARGET_LOSS: StopReason
STOP_REASON_EARLY_STOPPING: StopReason
STOP_REASON_MIN_LEARNING_RATE: StopReason
GRADIENT_MODE_UNSPECIFIED: GradientMode
GRADIENT_MODE_EXACT: GradientMode
GRADIENT_MODE_ARTICLE: GradientMode

class Tensor(_message.Message):
    __slots__ = ("shape", "values", "raw", "dtype")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    raw: bytes
    dtype: Dtype
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., raw: _Optional[bytes] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class Layer(_message.Message):
    __slots__ = ("weights", "biases")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    BIASES_FIELD_NUMBER: _ClassVar[int]
    weights: Tensor
    biases: Tensor
    def __init__(self, weights: _Optional[_Union[Tensor, _Mapping]] = ..., biases: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Architecture(_message.Message):
    __slots__ = ("layer_sizes", "hidden_activation", "output_activation", "loss", "bias", "gradient_mode", "dtype")
    LAYER_SIZES_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_MODE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    layer_sizes: _containers.RepeatedScalarFieldContainer[int]
    hidden_activation: Activation
    output_activation: Activation
    loss: Loss
    bias: bool
    gradient_mode: GradientMode
    dtype: Dtype
    def __init__(self, layer_sizes: _Optional[_Iterable[int]] = ..., hidden_activation: _Optional[_Union[Activation, str]] = ..., output_activation: _Optional[_Union[Activation, str]] = ..., loss: _Optional[_Union[Loss, str]] = ..., bias: _Optional[bool] = ..., gradient_mode: _Optional[_Union[GradientMode, str]] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "architecture", "version", "epochs_trained", "iterations", "last_loss", "create_time", "update_time", "layers", "parameter_count", "optimizer", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_TRAINED_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_LOSS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    id: str
    architecture: Architecture
    version: int
    epochs_trained: int
    iterations: int
    last_loss: float
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    parameter_count: int
    optimizer: Optimizer
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., architecture: _Optional[_Union[Architecture, _Mapping]] = ..., version: _Optional[int] = ..., epochs_trained: _Optional[int] = ..., iterations: _Optional[int] = ..., last_loss: _Optional[float] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., parameter_count: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateModelRequest(_message.Message):
    __slots__ = ("model_id", "architecture", "init", "seed", "layers", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    architecture: Architecture
    init: Init
    seed: int
    layers: _containers.RepeatedCompositeFieldContainer[Layer]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, model_id: _Optional[str] = ..., architecture: _Optional[_Union[Architecture, _Mapping]] = ..., init: _Optional[_Union[Init, str]] = ..., seed: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[Layer, _Mapping]]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_id", "include_weights", "raw", "min_version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    include_weights: bool
    raw: bool
    min_version: int
    def __init__(self, model_id: _Optional[str] = ..., include_weights: _Optional[bool] = ..., raw: _Optional[bool] = ..., min_version: _Optional[int] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("model_id", "inputs", "targets", "epochs", "learning_rate", "batch_size", "momentum", "shuffle", "seed", "target_loss", "report_every", "optimizer", "beta1", "beta2", "epsilon", "weight_decay", "nesterov", "schedule", "validation_inputs", "validation_targets", "validation_fraction", "early_stopping", "sample_weights", "reset_optimizer", "dataset_id", "validation_dataset_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    SHUFFLE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TARGET_LOSS_FIELD_NUMBER: _ClassVar[int]
    REPORT_EVERY_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    BETA1_FIELD_NUMBER: _ClassVar[int]
    BETA2_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_INPUTS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_TARGETS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    RESET_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    inputs: Tensor
    targets: Tensor
    epochs: int
    learning_rate: float
    batch_size: int
    momentum: float
    shuffle: bool
    seed: int
    target_loss: float
    report_every: int
    optimizer: Optimizer
    beta1: float
    beta2: float
    epsilon: float
    weight_decay: float
    nesterov: bool
    schedule: LearningRateSchedule
    validation_inputs: Tensor
    validation_targets: Tensor
    validation_fraction: float
    early_stopping: EarlyStopping
    sample_weights: Tensor
    reset_optimizer: bool
    dataset_id: str
    validation_dataset_id: str
    def __init__(self, model_id: _Optional[str] = ..., inputs: _Optional[_Union[Tensor, _Mapping]] = ..., targets: _Optional[_Union[Tensor, _Mapping]] = ..., epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., momentum: _Optional[float] = ..., shuffle: _Optional[bool] = ..., seed: _Optional[int] = ..., target_loss: _Optional[float] = ..., report_every: _Optional[int] = ..., optimizer: _Optional[_Union[Optimizer, str]] = ..., beta1: _Optional[float] = ..., beta2: _Optional[float] = ..., epsilon: _Optional[float] = ..., weight_decay: _Optional[float] = ..., nesterov: _Optional[bool] = ..., schedule: _Optional[_Union[LearningRateSchedule, _Mapping]] = ..., validation_inputs: _Optional[_Union[Tensor, _Mapping]] = ..., validation_targets: _Optional[_Union[Tensor, _Mapping]] = ..., validation_fraction: _Optional[float] = ..., early_stopping: _Optional[_Union[EarlyStopping, _Mapping]] = ..., sample_weights: _Optional[_Union[Tensor, _Mapping]] = ..., reset_optimizer: _Optional[bool] = ..., dataset_id: _Optional[str] = ..., validation_dataset_id: _Optional[str] = ...) -> None: ...

class LearningRateSchedule(_message.Message):
    __slots__ = ("kind", "step_epochs", "gamma", "patience", "min_learning_rate")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[LearningRateSchedule.Kind]
        KIND_CONSTANT: _ClassVar[LearningRateSchedule.Kind]
        KIND_STEP: _ClassVar[LearningRateSchedule.Kind]
        KIND_COSINE: _ClassVar[LearningRateSchedule.Kind]
        KIND_PLATEAU: _ClassVar[LearningRateSchedule.Kind]
    KIND_UNSPECIFIED: LearningRateSchedule.Kind
    KIND_CONSTANT: LearningRateSchedule.Kind
    KIND_STEP: LearningRateSchedule.Kind
    KIND_COSINE: LearningRateSchedule.Kind
    KIND_PLATEAU: LearningRateSchedule.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    STEP_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    kind: LearningRateSchedule.Kind
    step_epochs: int
    gamma: float
    patience: int
    min_learning_rate: float
    def __init__(self, kind: _Optional[_Union[LearningRateSchedule.Kind, str]] = ..., step_epochs: _Optional[int] = ..., gamma: _Optional[float] = ..., patience: _Optional[int] = ..., min_learning_rate: _Optional[float] = ...) -> None: ...

class EarlyStopping(_message.Message):
    __slots__ = ("patience", "min_delta", "restore_best", "monitor")
    PATIENCE_FIELD_NUMBER: _ClassVar[int]
    MIN_DELTA_FIELD_NUMBER: _ClassVar[int]
    RESTORE_BEST_FIELD_NUMBER: _ClassVar[int]
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    patience: int
    min_delta: float
    restore_best: bool
    monitor: Monitor
    def __init__(self, patience: _Optional[int] = ..., min_delta: _Optional[float] = ..., restore_best: _Optional[bool] = ..., monitor: _Optional[_Union[Monitor, str]] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("epoch", "loss", "iterations", "elapsed_seconds", "model_version", "done", "validation_loss", "accuracy", "validation_accuracy", "learning_rate", "best_epoch", "stop_reason")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    loss: float
    iterations: int
    elapsed_seconds: float
    model_version: int
    done: bool
    validation_loss: float
    accuracy: float
    validation_accuracy: float
    learning_rate: float
    best_epoch: int
    stop_reason: StopReason
    def __init__(self, epoch: _Optional[int] = ..., loss: _Optional[float] = ..., iterations: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ..., model_version: _Optional[int] = ..., done: _Optional[bool] = ..., validation_loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., validation_accuracy: _Optional[float] = ..., learning_rate: _Optional[float] = ..., best_epoch: _Optional[int] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("model_id", "input", "target", "learning_rate", "dry_run", "min_version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _containers.RepeatedScalarFieldContainer[float]
    target: _containers.RepeatedScalarFieldContainer[float]
    learning_rate: float
    dry_run: bool
    min_version: int
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Iterable[float]] = ..., target: _Optional[_Iterable[float]] = ..., learning_rate: _Optional[float] = ..., dry_run: _Optional[bool] = ..., min_version: _Optional[int] = ...) -> None: ...

class LayerTrace(_message.Message):
    __slots__ = ("net", "output", "error", "delta", "updated", "before")
    NET_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    net: _containers.RepeatedScalarFieldContainer[float]
    output: _containers.RepeatedScalarFieldContainer[float]
    error: _containers.RepeatedScalarFieldContainer[float]
    delta: _containers.RepeatedScalarFieldContainer[float]
    updated: Layer
    before: Layer
    def __init__(self, net: _Optional[_Iterable[float]] = ..., output: _Optional[_Iterable[float]] = ..., error: _Optional[_Iterable[float]] = ..., delta: _Optional[_Iterable[float]] = ..., updated: _Optional[_Union[Layer, _Mapping]] = ..., before: _Optional[_Union[Layer, _Mapping]] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("layers", "loss", "model_version")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerTrace]
    loss: float
    model_version: int
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerTrace, _Mapping]]] = ..., loss: _Optional[float] = ..., model_version: _Optional[int] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model_id", "inputs", "min_version")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    inputs: Tensor
    min_version: int
    def __init__(self, model_id: _Optional[str] = ..., inputs: _Optional[_Union[Tensor, _Mapping]] = ..., min_version: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("outputs", "model_version")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    outputs: Tensor
    model_version: int
    def __init__(self, outputs: _Optional[_Union[Tensor, _Mapping]] = ..., model_version: _Optional[int] = ...) -> None: ...

class CheckGradientsRequest(_message.Message):
    __slots__ = ("model_id", "input", "target", "epsilon")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _containers.RepeatedScalarFieldContainer[float]
    target: _containers.RepeatedScalarFieldContainer[float]
    epsilon: float
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Iterable[float]] = ..., target: _Optional[_Iterable[float]] = ..., epsilon: _Optional[float] = ...) -> None: ...

class LayerGradients(_message.Message):
    __slots__ = ("analytic", "numeric", "max_relative_error")
    ANALYTIC_FIELD_NUMBER: _ClassVar[int]
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    MAX_RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    analytic: Layer
    numeric: Layer
    max_relative_error: float
    def __init__(self, analytic: _Optional[_Union[Layer, _Mapping]] = ..., numeric: _Optional[_Union[Layer, _Mapping]] = ..., max_relative_error: _Optional[float] = ...) -> None: ...

class CheckGradientsResponse(_message.Message):
    __slots__ = ("layers", "loss", "max_relative_error", "epsilon", "model_version")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    MAX_RELATIVE_ERROR_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedCompositeFieldContainer[LayerGradients]
    loss: float
    max_relative_error: float
    epsilon: float
    model_version: int
    def __init__(self, layers: _Optional[_Iterable[_Union[LayerGradients, _Mapping]]] = ..., loss: _Optional[float] = ..., max_relative_error: _Optional[float] = ..., epsilon: _Optional[float] = ..., model_version: _Optional[int] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DatasetHeader
    chunk: DatasetChunk
    def __init__(self, header: _Optional[_Union[DatasetHeader, _Mapping]] = ..., chunk: _Optional[_Union[DatasetChunk, _Mapping]] = ...) -> None: ...

class DatasetHeader(_message.Message):
    __slots__ = ("dataset_id", "n_inputs", "n_targets", "dtype")
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    N_INPUTS_FIELD_NUMBER: _ClassVar[int]
    N_TARGETS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    n_inputs: int
    n_targets: int
    dtype: Dtype
    def __init__(self, dataset_id: _Optional[str] = ..., n_inputs: _Optional[int] = ..., n_targets: _Optional[int] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class DatasetChunk(_message.Message):
    __slots__ = ("inputs", "targets")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    inputs: Tensor
    targets: Tensor
    def __init__(self, inputs: _Optional[_Union[Tensor, _Mapping]] = ..., targets: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "rows", "n_inputs", "n_targets", "dtype", "bytes", "sha256", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    N_INPUTS_FIELD_NUMBER: _ClassVar[int]
    N_TARGETS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    rows: int
    n_inputs: int
    n_targets: int
    dtype: Dtype
    bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., rows: _Optional[int] = ..., n_inputs: _Optional[int] = ..., n_targets: _Optional[int] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UploadDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
