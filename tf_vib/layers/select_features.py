"""SelectFeatures: keeps chosen features of the last axis (a gather, no parameters)."""

from tf_vib._keras import keras, tf

__all__ = ["SelectFeatures", "check_indices"]


def check_indices(owner, indices):
    """``indices`` as a list of ints, checked: non-empty, sorted, distinct, non-negative."""
    indices = [int(i) for i in indices]
    if not indices or any(i < 0 for i in indices) or sorted(set(indices)) != indices:
        raise ValueError(
            f"`indices` of {owner} must be a non-empty, sorted list of distinct non-negative ints; "
            f"received indices={indices!r}"
        )
    return indices


@keras.utils.register_keras_serializable(package="tf_vib")
class SelectFeatures(keras.layers.Layer):
    """Gather ``indices`` from the last axis of the input.

    ``strip_masks`` puts it where a FeatureMask sat on the model's own input, so the
    stripped model keeps the user's input signature while its first layer only sees
    the kept features. It has no weights; the converter turns it into a TFLite ``GATHER``
    or, when that is cheaper, into zero rows of the next layer's kernel
    (``converters.to_tflite(feature_selection=...)``).

    Args:
      indices: list of int, the kept positions on the last axis (sorted, distinct).
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = check_indices("SelectFeatures", indices)
        self.supports_masking = True

    def build(self, input_shape):
        features = tf.TensorShape(input_shape)[-1]
        if features is not None and self.indices[-1] >= features:
            raise ValueError(
                f"SelectFeatures {self.name!r} selects index {self.indices[-1]} but its input "
                f"has only {features} features"
            )
        super().build(input_shape)

    def call(self, inputs):
        return tf.gather(inputs, self.indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([len(self.indices)])

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}
