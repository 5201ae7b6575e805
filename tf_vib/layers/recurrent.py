"""What the VIB recurrent cells share: weights like Keras's cells, and per-gate masks.

The noise of each gate mask is drawn once per sequence: the ``RNN`` layer resets the
cell's caches at the start of every call, the first step (which ``RNN`` runs outside
its time loop to learn the output shapes) draws the noise, and every later step reuses
it. That is Keras's own dropout-mask mechanism, so ``RNN(VIBLSTMCell(...))`` works as a
plain ``RNN``.

``VIBRNN`` (``tf_vib.layers.vib_rnn``, what ``add_vib_masks`` builds) is that ``RNN``
with the input product taken out of the time loop: the cells' ``project_inputs`` and
``hoists_input_product`` below serve it.
"""

import numpy as np
from tensorflow_model_optimization.sparsity.keras import PrunableLayer

from tf_vib._checks import check_rate, check_units
from tf_vib._keras import ContextValueCache, DropoutRNNCellMixin, RandomGenerator, keras, tf
from tf_vib.layers.base import VIBLayerMixin
from tf_vib.layers.time_mask import TimeMask

__all__ = ["VIBRecurrentCell", "MEMORYLESS_BIAS"]


#: Gate bias given to a unit whose forget (LSTM) or update (GRU) mask is pruned: the gate
#: is then sigmoid(-30) ~ 1e-13, i.e. zero, and the unit keeps no memory, as in the masked cell.
MEMORYLESS_BIAS = -30.0


def base_arguments(arguments, *own):
    """The base cell's keyword arguments, out of a subclass ``__init__``'s ``locals()``
    (taken first thing): every argument but ``units``, ``**kwargs`` and the subclass's
    ``own``. The subclasses list every argument so that ``help()`` and IDEs show them."""
    skip = {"self", "units", "kwargs", "__class__", *own}
    return {key: value for key, value in arguments.items() if key not in skip}


class VIBRecurrentCell(VIBLayerMixin, DropoutRNNCellMixin, keras.layers.Layer, PrunableLayer):
    """Base of ``VIBLSTMCell`` and ``VIBGRUCell``.

    Each cell owns its folding into the plain layer. Subclasses set ``GATES`` (Keras's gate
    order), ``FOLDING_GATES`` (masks whose mean folds exactly into a plain layer),
    ``UNIT_GATES`` (masks that remove a unit when pruned, the state's own first),
    ``STATE_GATE`` (whose value scales the state), ``MEMORY_GATE`` (pruned: a memoryless
    unit), ``CANDIDATE_GATE`` (zeroed: a silent unit), ``PLAIN_CELL``/``PLAIN_LAYER`` (the
    Keras classes it strips to), and implement ``build``/``step`` (one time step; ``call``
    adds the frame gate of a ``TimeMask``). ``hard_gates`` makes folding masks hard
    (``1[kept]``) at inference, for units that go on through a layer that a scale does not
    pass (an activation, max pooling, a Bidirectional sum). ``frame_steps=T`` gives the cell
    a ``TimeMask`` over T frames (``tf_vib.layers.time_mask``).
    """

    GATES = ()
    FOLDING_GATES = frozenset()
    #: Cells whose ``call`` takes its input product from ``_input_projection`` (so that
    #: ``VIBRNN`` may do that product before the time loop) set this.
    HOISTS_INPUT_PRODUCT = False
    #: Set by ``VIBRNN`` while it runs the time loop on inputs it projected already.
    _inputs_projected = False
    #: Set by ``VIBRNN`` while each step's input carries the frame gate as its last channel.
    _frame_gated = False

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
        dropout=0.0,
        recurrent_dropout=0.0,
        masked_gates=None,
        hard_gates="",
        frame_steps=None,
        kl_factor=1e-4,
        kl_mult=1.0,
        keep_threshold=0.0,
        mu_initializer=None,
        log_sigma2_initializer=None,
        **kwargs,
    ):
        self._init_vib(kl_factor=kl_factor, kl_mult=kl_mult, keep_threshold=keep_threshold,
                       mu_initializer=mu_initializer, log_sigma2_initializer=log_sigma2_initializer)
        super().__init__(**kwargs)
        self.units = check_units(units, type(self).__name__)
        self.dropout = check_rate("dropout", dropout, type(self).__name__)
        self.recurrent_dropout = check_rate("recurrent_dropout", recurrent_dropout, type(self).__name__)
        if self.dropout or self.recurrent_dropout:
            self._random_generator = RandomGenerator(None)
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
        if not isinstance(hard_gates, str) or set(hard_gates) - set(gates):
            raise ValueError(
                f"`hard_gates` of {type(self).__name__} must be a string of gate letters from "
                f"{gates!r}; received hard_gates={hard_gates!r}"
            )
        self.hard_gates = "".join(g for g in gates if g in hard_gates)
        if frame_steps is not None and (isinstance(frame_steps, bool) or not isinstance(frame_steps, int)
                                        or frame_steps < 1):
            raise ValueError(f"`frame_steps` of {type(self).__name__} must be None or a positive int (the "
                             f"number of frames T of a TimeMask); received frame_steps={frame_steps!r}")
        self.frame_steps = frame_steps
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
        return {gate: self._vib_masks[gate].sample(batch) for gate in self.masked_gates}

    def gate_multipliers(self, inputs, training=None):
        """The value each masked gate is multiplied by: noisy while training, else deterministic."""
        if training is None or (isinstance(training, bool) and not training):
            return {gate: self._vib_masks[gate].deterministic() for gate in self.masked_gates}
        # Drawn outside any tf.cond so that the time loop can reuse it.
        noisy = self._noise_cache.setdefault(kwargs={"inputs": inputs})
        if isinstance(training, bool):
            return noisy  # no deterministic value: it would cost ops at every step
        deterministic = {gate: self._vib_masks[gate].deterministic() for gate in self.masked_gates}
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
            self._add_mask(gate, self.units, folds=gate in self.FOLDING_GATES and gate not in self.hard_gates)
        if self.frame_steps is not None:
            self._vib_masks["t"] = TimeMask(self, self.frame_steps, self.mask_settings)
        self._finish_vib_build()

    @property
    def time_mask(self):
        """The ``TimeMask`` of a cell built with ``frame_steps``, else None."""
        return self._vib_masks.get("t")

    # -- the step, gated by the frame mask -----------------------------------------------

    def call(self, inputs, states, training=None):
        if self.frame_steps is None:
            return self.step(inputs, states, training)
        if not self._frame_gated:
            raise ValueError(f"{type(self).__name__} {self.name!r} has a TimeMask (frame_steps="
                             f"{self.frame_steps}): run it in tf_vib.layers.VIBRNN, which feeds it the frame gates")
        # A pruned step (gate 0) leaves every state as it was: the stripped layer skips it.
        gate = inputs[:, -1:]
        output, new_states = self.step(inputs[:, :-1], states, training)
        old = tf.nest.flatten(states)
        new = [gate * n + (1.0 - gate) * o for n, o in zip(tf.nest.flatten(new_states), old, strict=True)]
        return gate * output + (1.0 - gate) * old[0], new

    def step(self, inputs, states, training=None):
        """One time step of the cell, without the frame gate: ``output, new_states``."""
        raise NotImplementedError

    # -- dropout, as in Keras's cells (implementation 2: one mask for every gate) -------

    def _dropped_inputs(self, inputs, training):
        if 0.0 < self.dropout < 1.0:
            return inputs * self.get_dropout_mask_for_cell(inputs, training, count=1)[0]
        return inputs

    def _dropped_state(self, state, training):
        if 0.0 < self.recurrent_dropout < 1.0:
            return state * self.get_recurrent_dropout_mask_for_cell(state, training, count=1)[0]
        return state

    @property
    def hoists_input_product(self):
        """Whether ``VIBRNN`` may multiply the whole sequence by the kernel before the loop
        (not with input dropout, which Keras draws inside the loop's first step)."""
        return self.HOISTS_INPUT_PRODUCT and not 0.0 < self.dropout < 1.0

    # -- folding into the plain layer ----------------------------------------------------

    def plain_cell_config(self):
        """The keyword arguments of the plain Keras cell this cell strips to (no VIB ones)."""
        import inspect

        accepted = set(inspect.signature(self.PLAIN_CELL.__init__).parameters) - {"self", "kwargs"}
        config = {k: v for k, v in self.get_config().items() if k in accepted}
        if "unit_forget_bias" in accepted:
            config["unit_forget_bias"] = False  # the bias is set from the trained one
        return config

    def unit_alive(self, kept):
        """Which units survive, from ``{gate: kept}`` of the gates whose mask removes a unit."""
        alive = np.ones(self.units, bool)
        for gate in self.UNIT_GATES:
            if gate in kept:
                alive &= kept[gate]
        return alive

    def fold(self, values, units, kernel_rows, *, input_bias_shift=None):
        """Plain weights ``[kernel, recurrent_kernel, (bias)]`` for the kept ``units``; a cell
        without a bias gets one where removed constant inputs or pruned memory gates need it.

        ``values`` holds each gate mask's deterministic value (one vector per gate in
        ``GATES``), ``kernel_rows`` the input kernel's rows already taken and scaled for the
        input channels that remain, and ``input_bias_shift`` what removed constant inputs add
        to every gate's pre-activation. Returns ``(weights, state_scale)``: the stripped
        layer's state is the masked one divided by ``state_scale`` (what the consumers'
        kernel rows absorb).
        """
        u, n = self.units, len(units)
        cols = np.concatenate([g * u + units for g in range(len(self.GATES))])
        kernel = kernel_rows[:, cols]
        state_scale = values[self.STATE_GATE][units]
        recurrent = self.recurrent_kernel.numpy()[units][:, cols] * state_scale[:, None]
        memoryless = np.zeros(0, int)
        if self.MEMORY_GATE is not None:
            memoryless = self.GATES.index(self.MEMORY_GATE) * n + np.flatnonzero(values[self.MEMORY_GATE][units] == 0)
        shifted = input_bias_shift is not None and np.any(input_bias_shift[cols])
        if self.use_bias:
            bias = self.bias.numpy()[..., cols].copy()
        elif shifted or len(memoryless):  # the plain layer gets a bias (`strip_masks` builds it so)
            bias = np.zeros((2, len(cols)) if getattr(self, "reset_after", False) else (len(cols),), np.float32)
        else:
            bias = None
        if shifted:
            (bias[0] if bias.ndim == 2 else bias)[...] += input_bias_shift[cols]
        self._fold_gates(values, units, kernel, recurrent, bias)
        if self.MEMORY_GATE is not None:
            kernel[:, memoryless] = 0.0
            recurrent[:, memoryless] = 0.0
            if len(memoryless):
                if bias.ndim == 2:
                    bias[0, memoryless], bias[1, memoryless] = MEMORYLESS_BIAS, 0.0
                else:
                    bias[memoryless] = MEMORYLESS_BIAS
        weights = [kernel, recurrent] + ([bias] if bias is not None else [])
        return [w.astype(np.float32) for w in weights], state_scale

    def _fold_gates(self, values, units, kernel, recurrent, bias):
        """Fold the masks that act inside the recurrence (a GRU's reset gate)."""

    def silence(self, weights, positions):
        """Make the units at ``positions`` (of the folded weights) output 0 at every step:
        their candidate's columns and bias are zeroed, so with a zero initial state their
        state stays 0. For a Bidirectional layer whose directions must keep the same units."""
        n = weights[1].shape[0]
        cols = self.GATES.index(self.CANDIDATE_GATE) * n + np.asarray(positions, dtype=int)
        for w in weights:
            w[..., cols] = 0.0
        return weights

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

    def project_inputs(self, inputs):
        """``inputs @ kernel`` over the last axis: one step, or every step of a sequence."""
        return keras.backend.dot(inputs, self.kernel)

    def _input_projection(self, inputs):
        return inputs if self._inputs_projected else self.project_inputs(inputs)

    def get_config(self):
        ser = keras.initializers.serialize
        return {
            **super().get_config(),
            "units": self.units,
            "masked_gates": self.masked_gates,
            "hard_gates": self.hard_gates,
            "frame_steps": self.frame_steps,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
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
