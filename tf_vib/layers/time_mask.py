"""TimeMask: a VIB mask over a recurrent layer's time steps (frame pruning), and SelectFrames.

One gate ``z_t`` per frame position, shared across samples, with the mask maths of every
other VIB mask (``GaussianMask``: the same KL and keep rule). The gate acts on the
recurrent layer's state update, not on the frame::

    h_t = z_t * step(x_t, h_{t-1}) + (1 - z_t) * h_{t-1}      (and the same for c)

so that at inference, where ``z_t`` is the hard ``1[kept]``, a pruned position is skipped
and the state carried over: the layer run on the kept frames alone gives the same final
state, and ``strip_masks`` gives a model whose input holds only the kept frames.

The mask belongs to the VIB cell of the first recurrent layer (``frame_steps=T``), so its
variables save, load and prune with the cell's; ``VIBRNN`` computes the gates of the
whole sequence before the time loop and passes each step's gate to the cell as one extra
input channel.
"""

from tf_vib._keras import keras, tf
from tf_vib.layers.select_features import check_indices
from tf_vib.layers.vib_mask import GaussianMask, select

__all__ = ["TimeMask", "SelectFrames"]


class TimeMask(GaussianMask):
    """The VIB mask of the time axis: ``{host}/t_mask_mu`` and ``t_mask_log_sigma2`` of size T.

    It never folds: its inference value is the hard ``1[kept]`` (a scaled state update has
    no plain-layer equivalent).

    Args:
      host: the VIB cell that owns the variables.
      steps: int, the number of frame positions T.
      settings: the host's ``MaskSettings``.
    """

    def __init__(self, host, steps, settings):
        super().__init__(host, "t_mask", steps, settings, folds=False)

    def gates(self, batch, training=None):
        """Each sample's gate per step, shape ``(batch, T)``: noisy while training (one draw
        per sample, as the other masks), else ``1[kept]``."""
        return select(training, lambda: self.sample(batch),
                      lambda: tf.broadcast_to(self.deterministic(), (batch, self.units)))


@keras.utils.register_keras_serializable(package="tf_vib")
class SelectFrames(keras.layers.Layer):
    """Gather the frame positions ``indices`` from axis 1 of a (batch, time, ...) input.

    ``strip_masks(model, input_frames="all")`` puts it on the model's input, so that the
    stripped model keeps the T-frame signature while the layers behind it run on the kept
    frames only (``compress`` trains and scores such models on the full clips).

    Args:
      indices: list of int, the kept frame positions (sorted, distinct).
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = check_indices("SelectFrames", indices)

    def build(self, input_shape):
        steps = tf.TensorShape(input_shape)[1]
        if steps is not None and self.indices[-1] >= steps:
            raise ValueError(f"SelectFrames {self.name!r} selects frame {self.indices[-1]} but its input "
                             f"has only {steps} frames")
        super().build(input_shape)

    def call(self, inputs):
        return tf.gather(inputs, self.indices, axis=1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        shape[1] = len(self.indices)
        return tf.TensorShape(shape)

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}
