"""``VIBRNN``: ``keras.layers.RNN`` for a VIB cell, with the input product out of the time loop.

What ``add_vib_masks`` builds. It multiplies every step's inputs by the cell's kernel in
one matrix product before the time loop, instead of one small product per step. The
result is the same; training is faster, most of all for wide inputs behind a FeatureMask,
whose gradient needs the inputs' gradient (docs/design.md has the measurement). It is a
tfmot ``PrunableLayer`` itself, so magnitude pruning can still wrap it.
"""

from tensorflow_model_optimization.sparsity.keras import PrunableLayer

from tf_vib._keras import keras, tf

__all__ = ["VIBRNN"]


@keras.utils.register_keras_serializable(package="tf_vib")
class VIBRNN(keras.layers.RNN, PrunableLayer):
    """``keras.layers.RNN`` for a VIB cell, with every step's input product done at once.

    Before the time loop, the whole input sequence is multiplied by the cell's kernel
    (``cell.project_inputs``) in one matrix product; the loop then only adds the
    recurrent product. The outputs are those of ``RNN(cell)``. Any other cell, and
    nested or ragged inputs, run as in ``keras.layers.RNN``.

    A cell with a ``TimeMask`` (``frame_steps=T``) gets each step's frame gate as the last
    channel of that step's input (see ``tf_vib.layers.time_mask``); the layer then needs
    inputs of exactly T steps, forwards in time.

    Args:
      cell: a ``VIBLSTMCell``, ``VIBGRUCell`` or ``VIBSimpleRNNCell`` (other cells are
        accepted and run unchanged).
      **kwargs: as for ``keras.layers.RNN``.
    """

    def build(self, input_shape):
        steps = getattr(self.cell, "frame_steps", None)
        if steps is not None:
            shape = tf.TensorShape(input_shape)
            if self.go_backwards or self.time_major or shape.rank is None or shape.rank < 3 or shape[1] != steps:
                raise ValueError(
                    f"VIBRNN {self.name!r} has a TimeMask of {steps} frames: it needs inputs of shape "
                    f"(batch, {steps}, features), go_backwards=False and time_major=False; received "
                    f"input_shape={tuple(shape.as_list()) if shape.rank else shape}, "
                    f"go_backwards={self.go_backwards}, time_major={self.time_major}"
                )
        super().build(input_shape)

    def call(self, inputs, mask=None, training=None, initial_state=None, constants=None):
        kwargs = {"mask": mask, "training": training, "initial_state": initial_state, "constants": constants}
        time_mask = getattr(self.cell, "time_mask", None)
        if time_mask is None and (not getattr(self.cell, "hoists_input_product", False)
                                  or tf.nest.is_nested(inputs) or isinstance(inputs, tf.RaggedTensor)):
            return super().call(inputs, **kwargs)
        hoist = self.cell.hoists_input_product
        sequence = self.cell.project_inputs(inputs) if hoist else inputs
        if time_mask is not None:
            gates = time_mask.gates(tf.shape(inputs)[0], training)
            sequence = tf.concat([sequence, tf.cast(gates, sequence.dtype)[..., tf.newaxis]], axis=-1)
        self.cell._inputs_projected, self.cell._frame_gated = hoist, time_mask is not None
        try:
            return super().call(sequence, **kwargs)
        finally:
            self.cell._inputs_projected = self.cell._frame_gated = False

    def get_prunable_weights(self):
        """tfmot's ``PrunableLayer`` contract: the cell's kernels."""
        return self.cell.get_prunable_weights() if isinstance(self.cell, PrunableLayer) else []
