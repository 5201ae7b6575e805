"""What each output of a model is, for `converters.verify`: a classifier's or a regression's
(`output_tasks`), and the labels or targets given for it, checked against the outputs."""

import numpy as np

from tf_vib import bridge
from tf_vib._keras import keras

__all__ = ["output_tasks", "tasks_and_shapes", "per_output_labels"]

_CROSS_ENTROPIES = {keras.losses.sparse_categorical_crossentropy, keras.losses.categorical_crossentropy,
                    keras.losses.binary_crossentropy, keras.losses.categorical_focal_crossentropy,
                    keras.losses.binary_focal_crossentropy, keras.losses.kl_divergence,
                    keras.losses.categorical_hinge, keras.losses.hinge, keras.losses.squared_hinge}
_REGRESSION_LOSSES = {keras.losses.mean_squared_error, keras.losses.mean_absolute_error,
                      keras.losses.mean_absolute_percentage_error, keras.losses.mean_squared_logarithmic_error,
                      keras.losses.huber, keras.losses.log_cosh, keras.losses.poisson}


def _labels(y, n, rank, argument="y"):
    """Class indices for an output of ``rank`` (2: one class per sample, 3: one per step)
    from indices or one-hot rows."""
    labels = np.asarray(y)
    if labels.ndim == rank:
        labels = labels.argmax(axis=-1)
    if labels.ndim != rank - 1 or len(labels) != n:
        what = "class indices or one-hot rows" if rank == 2 else "class indices per step (n, steps) or one-hot"
        raise ValueError(f"`{argument}` must hold {n} {what}; received shape {np.shape(y)}")
    return labels.astype(np.int64)


def _targets(y, n, shape, argument="y"):
    """Regression targets for an output of ``shape`` (without the batch axis), as float32."""
    targets = np.asarray(y, dtype=np.float32)
    if len(targets) != n or targets.size != n * int(np.prod(shape)):
        raise ValueError(f"`{argument}` must hold {n} regression targets of shape {tuple(shape)} (the "
                         f"output's); received shape {np.shape(y)}")
    return targets.reshape(n, *shape)


def per_output_labels(y, n, ranks, shapes=None):
    """``[labels or None]`` per output (``ranks``: each output's rank): ``y`` itself for one
    output, a list/tuple of them for several. ``shapes``: per output, None for a classifier
    output (class labels), its shape for a regression one (float targets)."""
    outputs = len(ranks)
    shapes = shapes or [None] * outputs

    def read(labels, rank, shape, argument="y"):
        return _labels(labels, n, rank, argument) if shape is None else _targets(labels, n, shape, argument)

    if y is None:
        return [None] * outputs
    if outputs == 1:
        return [read(y, ranks[0], shapes[0])]
    if not isinstance(y, (list, tuple)) or len(y) != outputs:
        raise ValueError(f"the file has {outputs} outputs: `y` must be a list of {outputs} label arrays "
                         f"(or None entries), one per output; received {type(y).__name__}"
                         + (f" of {len(y)}" if isinstance(y, (list, tuple)) else ""))
    return [None if labels is None else read(labels, rank, shape, f"y[{i}]")
            for i, (labels, rank, shape) in enumerate(zip(y, ranks, shapes, strict=True))]


def output_tasks(model):
    """``"regression"`` or ``"classification"`` per output of a tf_keras ``model``: how
    `verify` judges it.

    The compiled loss decides when it is a known one (a cross-entropy, KL divergence or
    hinge: classification; MSE, MAE, MAPE, MSLE, Huber, log-cosh, Poisson: regression);
    otherwise (uncompiled, a custom loss) an output of one unit whose layer has no softmax
    or sigmoid is a regression output (its "class" would always be the same), any other a
    classifier's. Compile a one-logit binary classifier with a binary cross-entropy to have
    it judged as a classifier.
    """
    loss = getattr(model, "loss", None) if getattr(model, "compiled", True) else None
    names = list(model.output_names)
    per_output = (list(loss) if isinstance(loss, (list, tuple)) else
                  [loss.get(name) for name in names] if isinstance(loss, dict) else [loss] * len(names))
    per_output += [None] * (len(names) - len(per_output))
    tasks = []
    for index, (one, tensor) in enumerate(zip(per_output, model.outputs, strict=False)):
        fn = _loss_function(one)
        if fn in _CROSS_ENTROPIES:
            tasks.append("classification")
        elif fn in _REGRESSION_LOSSES:
            tasks.append("regression")
        else:
            layer = model.outputs[index]._keras_history.layer
            while isinstance(layer, keras.layers.Wrapper):
                layer = layer.layer
            squashed = getattr(layer, "activation", None) in (keras.activations.softmax, keras.activations.sigmoid)
            squashed = squashed or isinstance(layer, keras.layers.Softmax)
            tasks.append("regression" if tensor.shape[-1] == 1 and not squashed else "classification")
    return tasks


def tasks_and_shapes(user_model, model):
    """`output_tasks` of the user's model (``model``: its tf_keras twin, or itself) and, per
    output, the target shape of a regression output (None for a classifier's)."""
    tasks = output_tasks(model if model is user_model else bridge.compiled_twin(user_model, model))
    return tasks, [tuple(o.shape[1:]) if task == "regression" else None
                   for o, task in zip(model.outputs, tasks, strict=True)]


def _loss_function(loss):
    if loss is None:
        return None
    try:
        found = keras.losses.get(loss)
    except (ValueError, TypeError):
        return None
    return getattr(found, "fn", found)
