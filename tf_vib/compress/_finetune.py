"""Fine-tuning a copy of a plain model, on its loss or against a teacher (distillation).

Every stage after VIB (fine-tuning a candidate, tfmot pruning and clustering, `distill`)
trains through `fit`: with a ``teacher`` the copy is wrapped in a `Distiller` whose loss
mixes the labels' cross-entropy with the teacher's softened outputs (Hinton et al., 2015).
"""

import dataclasses
import numbers

import numpy as np

from tf_vib._checks import check_dataset, check_float, check_int
from tf_vib._keras import keras, require_tf_keras_model, tf

__all__ = ["DistillInfo", "Distiller", "KeepZeros", "kernels", "check_common", "copy_model", "distill", "distillation_loss",
           "fit", "output_is_softmax", "steps_per_epoch"]

@dataclasses.dataclass(frozen=True)
class DistillInfo:
    history: dict










def check_common(model, train_ds, validation_ds, epochs, learning_rate, loss, metrics, verbose,
                  teacher=None, distillation=None):
    require_tf_keras_model(model)
    if teacher is not None:
        require_tf_keras_model(teacher, "teacher")
        loss = "distillation"
    if distillation is not None and not (
        isinstance(distillation, dict) and set(distillation) <= {"alpha", "beta", "temperature"}
    ):
        raise ValueError(
            "`distillation` must be None or a dict with keys among 'alpha', 'beta', "
            f"'temperature'; received {distillation!r}"
        )
    check_dataset("train_ds", train_ds)
    check_dataset("validation_ds", validation_ds, allow_none=True)
    check_int("epochs", epochs, 1)
    check_float("learning_rate", learning_rate)
    if loss is None:
        raise ValueError(
            "`loss` is required unless a `teacher` is given (a Keras loss name or object); "
            "received None"
        )
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)):
        raise TypeError(f"`metrics` must be a list or tuple of metrics; received {metrics!r}")
    if verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2; received {verbose!r}")


def steps_per_epoch(dataset):
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError("`train_ds` must be finite (one epoch per pass); received a repeating dataset")
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        cardinality = sum(1 for _ in dataset)
    if cardinality < 1:
        raise ValueError("`train_ds` is empty")
    return cardinality


def copy_model(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class KeepZeros(keras.callbacks.Callback):
    """Re-zeroes, after every batch, the entries of ``variables`` that are zero at the start."""

    def __init__(self, variables):
        super().__init__()
        self.variables = list(variables)

    def on_train_begin(self, logs=None):
        self.masks = [tf.cast(tf.not_equal(v, 0), v.dtype) for v in self.variables]

    def on_train_batch_end(self, batch, logs=None):
        for variable, mask in zip(self.variables, self.masks, strict=True):
            variable.assign(variable * mask)


def kernels(layers):
    return [w for layer in layers for w in layer.weights if w.name.split("/")[-1].startswith(
        ("kernel", "recurrent_kernel"))]



def fit(model, train_ds, *, validation_ds, epochs, learning_rate, loss, metrics, verbose,
         callbacks, teacher=None, distillation=None):
    """Fine-tune ``model`` on ``loss``, or, given a ``teacher``, through a ``Distiller``."""
    trainer = model
    if teacher is not None:
        trainer = Distiller(model, teacher, **(distillation or {}))
        loss = None
    trainer.compile(keras.optimizers.Adam(learning_rate), loss=loss, metrics=list(metrics))
    history = trainer.fit(train_ds, validation_data=validation_ds, epochs=epochs,
                          callbacks=callbacks, verbose=verbose)
    return history.history


# -- magnitude pruning ---------------------------------------------------------------------


# -- knowledge distillation ----------------------------------------------------------------


def output_is_softmax(model):
    """True when ``model``'s (single) output comes out of a softmax, False for logits."""
    layer = model.outputs[0]._keras_history.layer
    while isinstance(layer, keras.layers.Wrapper):  # tfmot's pruning and clustering wrappers
        layer = layer.layer
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(layer, "activation", None) is keras.activations.softmax


def _as_logits(predictions, is_softmax):
    # log p is a valid logit vector: softmax(log(p) / T) is p tempered by T.
    return tf.math.log(tf.clip_by_value(predictions, 1e-12, 1.0)) if is_softmax else predictions


def distillation_loss(y_true, student_logits, teacher_logits, *, alpha=0.1, beta=0.9,
                      temperature=4.0):
    """Hinton's knowledge-distillation loss (docs/method.md section 7), averaged over the batch::

        alpha * CE(y, softmax(s)) + beta * T**2 * KL(softmax(t / T) || softmax(s / T))

    The ``T**2`` keeps the soft term's gradients on the scale of the hard term's.

    Args:
      y_true: integer class labels, or one-hot labels of the logits' shape.
      student_logits, teacher_logits: logits of the same shape ``(..., classes)``.
      alpha, beta: floats >= 0, the weights of the two terms.
      temperature: float > 0.

    Returns:
      A scalar float32 tensor.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError(f"`{name}` must be a number >= 0; received {value!r}")
    temperature = check_float("temperature", temperature)
    s = tf.convert_to_tensor(student_logits, tf.float32)
    t = tf.convert_to_tensor(teacher_logits, tf.float32)
    y = tf.convert_to_tensor(y_true)
    if y.shape.rank == s.shape.rank and y.shape[-1] == s.shape[-1] and s.shape[-1] != 1:
        hard = keras.losses.categorical_crossentropy(tf.cast(y, tf.float32), s, from_logits=True)
    else:
        hard = keras.losses.sparse_categorical_crossentropy(y, s, from_logits=True)
    soft = keras.losses.kl_divergence(tf.nn.softmax(t / temperature),
                                      tf.nn.softmax(s / temperature))
    return alpha * tf.reduce_mean(hard) + beta * temperature**2 * tf.reduce_mean(soft)


class Distiller(keras.Model):
    """Trains ``student`` against a frozen ``teacher`` with ``distillation_loss``.

    Either model may end in a softmax or in logits (``output_is_softmax``); metrics see the
    student's own outputs. Compile with an optimizer and metrics only (no loss), then fit.
    Only the student's variables are trained; the student's own losses are added.

    Args:
      student, teacher: tf_keras models with outputs of the same shape.
      alpha, beta, temperature: as in ``distillation_loss``.
    """

    def __init__(self, student, teacher, *, alpha=0.1, beta=0.9, temperature=4.0, **kwargs):
        super().__init__(**kwargs)
        require_tf_keras_model(student, "student")
        require_tf_keras_model(teacher, "teacher")
        if student.outputs[0].shape[1:] != teacher.outputs[0].shape[1:]:
            raise ValueError(
                f"`student` and `teacher` must have outputs of the same shape; received "
                f"{student.outputs[0].shape} and {teacher.outputs[0].shape}"
            )
        distillation_loss(np.zeros(1, "int32"), np.zeros((1, 2)), np.zeros((1, 2)),
                          alpha=alpha, beta=beta, temperature=temperature)  # validates them
        self.student, self.teacher = student, teacher
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self._student_softmax = output_is_softmax(student)
        self._teacher_softmax = output_is_softmax(teacher)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def _loss(self, x, y, training):
        predictions = self.student(x, training=training)
        teacher = self.teacher(x, training=False)
        loss = distillation_loss(
            y, _as_logits(predictions, self._student_softmax),
            tf.stop_gradient(_as_logits(teacher, self._teacher_softmax)),
            alpha=self.alpha, beta=self.beta, temperature=self.temperature,
        )
        if self.student.losses:
            loss += tf.add_n(self.student.losses)
        return loss, predictions

    def _results(self, loss, y, predictions):
        self.loss_tracker.update_state(loss)
        self.compiled_metrics.update_state(y, predictions)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            loss, predictions = self._loss(x, y, True)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return self._results(loss, y, predictions)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, predictions = self._loss(x, y, False)
        return self._results(loss, y, predictions)


def distill(student, teacher, train_ds, *, epochs, validation_ds=None, learning_rate=1e-3,
            alpha=0.1, beta=0.9, temperature=4.0, metrics=("accuracy",), preserve_sparsity=True,
            verbose=1):
    """Fine-tune a copy of ``student`` against ``teacher`` (Hinton et al.; docs/method.md section 7).

    Args:
      student: the plain (compressed) tf_keras model (not modified).
      teacher: the reference model, used in inference mode and never trained.
      train_ds, epochs, validation_ds, learning_rate, metrics, verbose: as in
        ``magnitude_prune``.
      alpha, beta, temperature: as in ``distillation_loss``; defaults 0.1, 0.9, 4.
      preserve_sparsity: bool, default True: kernel entries that are zero (pruned) stay
        zero. Clustering is not preserved: distil before ``cluster``, or pass the teacher
        to ``cluster`` itself.

    Returns:
      ``(plain_student, DistillInfo)``: the trained copy of the student (not the
      ``Distiller`` wrapper), not compiled.
    """
    check_common(student, train_ds, validation_ds, epochs, learning_rate, None, metrics, verbose,
                  teacher, {"alpha": alpha, "beta": beta, "temperature": temperature})
    if not isinstance(preserve_sparsity, bool):
        raise TypeError(f"`preserve_sparsity` must be a bool; received {preserve_sparsity!r}")
    copy = copy_model(student)
    history = fit(copy, train_ds, validation_ds=validation_ds, epochs=epochs,
                  learning_rate=learning_rate, loss=None, metrics=metrics, verbose=verbose,
                  callbacks=[KeepZeros(kernels(copy.layers))] if preserve_sparsity else [],
                  teacher=teacher,
                  distillation={"alpha": alpha, "beta": beta, "temperature": temperature})
    return copy, DistillInfo(history)
