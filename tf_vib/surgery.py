"""strip_masks: turn a model with VIB layers into a plain, smaller Keras model.

The model is rebuilt once (`tf_vib._graph.rebuild`). For every tensor the walk keeps a
``Channels`` record that relates the new (stripped) tensor to the masked model's tensor:

    masked[..., physical[j]] == scale[j] * stripped[..., j]    for live j
    masked[..., c] == offset[c]                                  for every other c

(``offset`` is 0 unless a carrier maps a removed unit's 0 to a constant, e.g. a
BatchNormalization; the reader folds it into its bias, see `tf_vib._kept.Channels`.)

A mask changes the record and vanishes; a layer that reads the tensor through a kernel
(Dense, Conv1D, LSTM, GRU, SimpleRNN, Bidirectional) takes the live rows of its kernel,
scaled; a VIB recurrent layer keeps its living units, and its cell folds its mask means
(``VIBRecurrentCell.fold``); Dense, Conv1D and Embedding layers whose every reader prunes
some of their units lose those columns; carriers (`tf_vib.registry`) carry the record
through; any other layer must receive its input unchanged.
"""



from tf_vib import bridge
from tf_vib._checks import check_int
from tf_vib._frames import kept_frames
from tf_vib._graph import (
    graph_nodes,
    rebuild,
)
from tf_vib._kept import (
    LayerRecord,
    alive_units,
    check_threshold,
    unit_gates,
)
from tf_vib._keras import keras, require_tf_keras_model
from tf_vib._stripper import Stripper
from tf_vib.layers.recurrent import MEMORYLESS_BIAS
from tf_vib.layers.time_mask import SelectFrames

__all__ = ["strip_masks", "kept_input_features", "kept_frames", "take_kept_frames", "alive_units", "unit_gates",
           "LayerRecord", "MEMORYLESS_BIAS"]



def _check_model(model, input_features, min_units, input_frames="kept"):
    require_tf_keras_model(model, "model")
    if input_frames not in ("all", "kept"):
        raise ValueError(
            f"`input_frames` must be 'kept' (the input holds only the frames a TimeMask keeps) or 'all' "
            f"(keep the model's input signature and select the kept frames inside); received {input_frames!r}"
        )
    if input_features not in ("all", "kept"):
        raise ValueError(
            f"`input_features` must be 'all' (keep the model's input signature and select "
            f"the kept features inside) or 'kept' (the input holds only the kept features); "
            f"received {input_features!r}"
        )
    check_int("min_units", min_units, 0)


def strip_masks(model, *, threshold=None, min_units=0, input_features="all", input_frames="kept",
                return_records=False):
    """Remove every VIB mask, the pruned units and the pruned input features.

    Returns a new plain tf_keras model (``LSTM``, ``GRU``, ``SimpleRNN``, ``Bidirectional``,
    ``Dense`` and the user's other layers; a ``SelectFeatures`` gather where a FeatureMask
    sat on the model's own input) whose outputs equal the masked model's deterministic
    outputs. Pruned hidden units are removed from the recurrent layer and from the next
    layer's kernel rows, surviving mask means are folded into the weights, and a Dense,
    Conv1D or Embedding layer whose readers prune some of its units loses those columns.
    Every call argument, dtype and layer setting of the model is kept. The input model is
    not modified.

    Exactness assumes a zero initial state (the recurrent layers' default).

    Args:
      model: a Sequential or functional tf_keras model (or Keras 3 one: the result is then
        a Keras 3 model, through `tf_vib.bridge`).
      threshold: float >= 0 or None (default). A unit is kept while its
        ``log_alpha < threshold``; None uses each layer's ``keep_threshold``.
      min_units: int, default 0. Keep at least this many units (and features) per layer,
        the most informative ones. With 0, a layer that would lose all its units raises.
      input_features: ``"all"`` (default) keeps the model's input signature; ``"kept"``
        makes the new model's input hold only the kept features (see
        ``kept_input_features`` for their indices).
      input_frames: for a model with a ``TimeMask``: ``"kept"`` (default) makes the new
        model's input take only the kept frames, shape ``(n, K, ...)`` (``kept_frames``
        gives their positions, ``tf_vib.datasets.select_frames`` picks them out of a clip);
        ``"all"`` keeps the T-frame input and gathers the kept frames inside
        (``SelectFrames``). Either way the layers behind run on K frames only.
      return_records: also return the per-layer ``LayerRecord`` list (a TimeMask's row:
        kind ``"TimeMask"``, units = frames).

    Returns:
      The plain model, or ``(model, records)`` with ``return_records=True``.

    Example:

    >>> import tf_vib
    >>> vib = keras.Sequential([keras.Input((6, 3)),
    ...                         keras.layers.RNN(tf_vib.layers.VIBLSTMCell(4)),
    ...                         keras.layers.Dense(2)])
    >>> [type(layer).__name__ for layer in tf_vib.strip_masks(vib).layers]
    ['LSTM', 'Dense']
    """
    model, back = bridge.to_internal(model, "model")
    _check_model(model, input_features, min_units, input_frames)
    threshold = check_threshold(threshold)
    stripper = Stripper(model, threshold, int(min_units), input_features, input_frames)
    stripped = back(stripper.run())
    return (stripped, stripper.records) if return_records else stripped


def kept_input_features(model, *, threshold=None, min_units=0):
    """The indices of the model-input features that survive, by input name.

    Only inputs read by exactly one FeatureMask appear. These are the columns the
    user's data must hold for ``strip_masks(model, input_features="kept")``.
    """
    _check_model(model, "kept", min_units)
    stripper = Stripper(model, check_threshold(threshold), int(min_units), "kept")
    stripper.run()
    return dict(stripper.kept_inputs)


def take_kept_frames(model):
    """A stripped model whose input gathers kept frames (``SelectFrames``) as one that takes
    only those frames: ``(model, {"kept": [...], "of": T})``, or ``(model, None)`` unchanged
    when no ``SelectFrames`` reads a model input."""
    inputs = {id(t): t for t in model.inputs}
    node = next((n for n in graph_nodes(model) if isinstance(n.layer, SelectFrames)
                 and id(n.keras_inputs[0]) in inputs), None)
    if node is None:
        return model, None
    source, indices = node.keras_inputs[0], node.layer.indices

    def new_input(tensor, name):
        if tensor is not source:
            return None
        dims = tensor.shape.as_list()
        dims[1] = len(indices)
        return keras.Input(batch_size=dims[0], shape=tuple(dims[1:]), dtype=tensor.dtype, name=name)

    rebuilt = rebuild(model, lambda call: call.args[0] if call.node is node else None, new_input=new_input)
    return rebuilt, {"kept": list(indices), "of": int(source.shape[1])}
