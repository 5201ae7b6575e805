"""What the VIB recurrent cells share: weights like Keras's cells, and per-gate masks.

The noise of each gate mask is drawn once per sequence: the ``RNN`` layer resets the
cell's caches at the start of every call, the first step (which ``RNN`` runs outside
its time loop to learn the output shapes) draws the noise, and every later step reuses
it. That is Keras's own dropout-mask mechanism, so ``RNN(VIBLSTMCell(...))`` stays a
plain ``RNN`` that tfmot can wrap.
"""

from tensorflow_model_optimization.sparsity.keras import PrunableLayer

from tf_vib._keras import ContextValueCache, DropoutRNNCellMixin, keras, tf
from tf_vib.layers.base import VIBLayerMixin

__all__ = ["VIBRecurrentCell"]


def check_units(units, layer_name):
    if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
        raise ValueError(
            f"`units` of {layer_name} must be a positive integer; received units={units!r}"
        )
    return units


class VIBRecurrentCell(VIBLayerMixin, DropoutRNNCellMixin, keras.layers.Layer, PrunableLayer):
    """Base of ``VIBLSTMCell`` and ``VIBGRUCell``.

    Subclasses set ``GATES`` (Keras's gate order), ``FOLDING_GATES`` (masks whose mean
    folds exactly into a plain layer), and implement ``build``/``call``.
    """

    GATES = ()
    FOLDING_GATES = frozenset()

    def __init__(
        self,
        units,
        *,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        masked_gates=None,
        **kwargs,
    ):
        self._init_vib(kwargs)
        super().__init__(**kwargs)
        self.units = check_units(units, type(self).__name__)
        gates = "".join(self.GATES)
        masked_gates = gates if masked_gates is None else masked_gates
        if (
            not isinstance(masked_gates, str)
            or not masked_gates
            or set(masked_gates) - set(gates)
            or len(set(masked_gates)) != len(masked_gates)
        ):
            raise ValueError(
                f"`masked_gates` of {type(self).__name__} must be a non-empty string of "
                f"distinct gate letters from {gates!r}; received masked_gates={masked_gates!r}"
            )
        self.masked_gates = "".join(g for g in gates if g in masked_gates)
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = keras.regularizers.get(recurrent_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.recurrent_constraint = keras.constraints.get(recurrent_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    # -- noise, drawn once per sequence -------------------------------------------------

    @tf.__internal__.tracking.no_automatic_dependency_tracking
    def _create_non_trackable_mask_cache(self):
        super()._create_non_trackable_mask_cache()
        self._noise_cache = ContextValueCache(self._draw_noise)

    def reset_dropout_mask(self):
        super().reset_dropout_mask()
        self._noise_cache.clear()

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_noise_cache", None)
        return state

    def __setstate__(self, state):
        state["_noise_cache"] = ContextValueCache(self._draw_noise)
        super().__setstate__(state)

    def _draw_noise(self, inputs):
        batch = tf.shape(inputs)[0]
        return {gate: mask.sample(batch) for gate, mask in self._vib_masks.items()}

    def gate_multipliers(self, inputs, training=None):
        """The value each masked gate is multiplied by: noisy while training, else deterministic."""
        if training is None or (isinstance(training, bool) and not training):
            return {gate: mask.deterministic() for gate, mask in self._vib_masks.items()}
        # Drawn outside any tf.cond so that the time loop can reuse it.
        noisy = self._noise_cache.setdefault(kwargs={"inputs": inputs})
        if isinstance(training, bool):
            return noisy  # no deterministic value: it would cost ops at every step
        deterministic = {gate: mask.deterministic() for gate, mask in self._vib_masks.items()}
        return {
            gate: tf.cond(
                tf.cast(training, tf.bool),
                lambda gate=gate: noisy[gate],
                lambda gate=gate: tf.broadcast_to(deterministic[gate], tf.shape(noisy[gate])),
            )
            for gate in noisy
        }

    def _build_gate_masks(self):
        for gate in self.masked_gates:
            self._add_mask(gate, self.units, folds=gate in self.FOLDING_GATES)
        self._finish_vib_build()

    def _add_kernels(self, input_dim, n_gates, bias_shape, bias_initializer):
        self.kernel = self.add_weight(
            shape=(input_dim, n_gates * self.units),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, n_gates * self.units),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=bias_shape,
                name="bias",
                initializer=bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    def get_prunable_weights(self):
        """tfmot's ``PrunableLayer`` contract: magnitude pruning acts on the two kernels."""
        return [self.kernel, self.recurrent_kernel]

    def get_config(self):
        ser = keras.initializers.serialize
        return {
            **super().get_config(),
            "units": self.units,
            "masked_gates": self.masked_gates,
            "activation": keras.activations.serialize(self.activation),
            "recurrent_activation": keras.activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": ser(self.kernel_initializer),
            "recurrent_initializer": ser(self.recurrent_initializer),
            "bias_initializer": ser(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": keras.constraints.serialize(self.recurrent_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }
