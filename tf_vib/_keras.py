"""The one place tf-vib imports Keras.

tf-vib builds on ``tf_keras`` (the Keras 2 API) because
tensorflow-model-optimization accepts nothing else; Keras 3 models are rejected
by tfmot and by every public call of tf-vib. Everything else in the package
imports ``keras`` from here.
"""

import os

# TensorFlow reads this at import: keep its C++ start-up chatter out of the user's terminal
# unless they asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf", "require_tf_keras_model"]


def require_tf_keras_model(model, argument="model"):
    """Raise a clear error unless ``model`` is a built tf_keras Sequential or functional model."""
    if isinstance(model, keras.Model):
        if not model._is_graph_network:
            raise TypeError(
                f"`{argument}` must be a Sequential or functional tf_keras model; received the "
                f"subclassed model {type(model).__name__!r}, whose layer graph tf-vib cannot "
                "read. Rebuild it with `tf_keras.Sequential` or `tf_keras.Model(inputs, outputs)`."
            )
        return model
    module = type(model).__module__ or ""
    if module.startswith("keras"):
        raise TypeError(
            f"`{argument}` is a Keras 3 model ({type(model).__module__}.{type(model).__name__}); "
            "tf-vib (like tensorflow-model-optimization) needs a tf_keras (Keras 2) model. "
            "Build it with `import tf_keras as keras` (pip install tf-keras), or set "
            "TF_USE_LEGACY_KERAS=1 before importing TensorFlow so that tf.keras is tf_keras."
        )
    raise TypeError(
        f"`{argument}` must be a tf_keras.Model (Sequential or functional); received "
        f"{type(model).__name__}: {model!r:.80}"
    )

# The RNN layer resets these caches at the start of each call, outside the time loop; the VIB
# cells use the same mechanism to draw one noise sample per sequence, shared by every step.
from tf_keras.src.backend import ContextValueCache, RandomGenerator  # noqa: E402
from tf_keras.src.layers.rnn.dropout_rnn_cell_mixin import DropoutRNNCellMixin  # noqa: E402

__all__ += ["ContextValueCache", "DropoutRNNCellMixin", "RandomGenerator"]
