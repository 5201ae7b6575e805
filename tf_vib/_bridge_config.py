"""Layer configs between Keras 3 and tf_keras, as plain dicts (no Keras import here).

``tf_vib.bridge`` passes in the two Keras modules; this module only reads and rewrites
``get_config()`` dicts: dtype policies to their names, serialized initializers, regularizers
and constraints to ``{"class_name", "config"}`` with the keys the other Keras accepts, the
few renamed keys, and wrapped layers and cells (``Bidirectional``, ``TimeDistributed``,
``RNN``) rebuilt from their own serialized configs.
"""

import inspect

__all__ = ["SUPPORTED", "layer_from_config", "unsupported_layers"]

#: Layer class names the bridge maps (the layer registry's types, their wrappers and cells).
SUPPORTED = (
    "InputLayer", "LSTM", "GRU", "SimpleRNN", "RNN", "LSTMCell", "GRUCell", "SimpleRNNCell",
    "Bidirectional", "TimeDistributed", "Dense", "Conv1D", "Conv2D", "Embedding",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "Masking", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
    "BatchNormalization", "LayerNormalization", "Concatenate", "Add", "Multiply", "Average",
    "Subtract", "Maximum", "Minimum", "Flatten", "Reshape", "Permute", "RepeatVector",
    "Attention", "AdditiveAttention", "MultiHeadAttention",
)

#: Keys one Keras names differently: {class name: {Keras 3 key: tf_keras key}}.
_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}
#: Keys holding a serialized layer (the wrapped layer, the cell), built before the wrapper.
_SUBLAYER_KEYS = ("layer", "backward_layer", "cell")
#: Keyword arguments the base Layer takes through ``**kwargs`` (when a layer passes them on).
_BASE_KEYS = {"name", "trainable", "dtype", "activity_regularizer"}
#: Keyword arguments a base class takes through ``**kwargs``: {key: that base class's name}.
_BASE_CLASS_KEYS = {"zero_output_for_mask": "RNN"}
_NAMESPACES = ("initializers", "regularizers", "constraints")
#: Keys dropped when the other Keras lacks them: they choose how a layer computes, not what,
#: or (``batch_input_shape``, tf_keras attention's ``*_shape``) repeat the shapes the rebuilt
#: graph gives the layer when it calls it.
_HOW_NOT_WHAT = {"implementation", "use_cudnn", "batch_input_shape", "query_shape", "key_shape",
                 "value_shape"}


def unsupported_layers(layers, source):
    """``[(name, type name)]`` of the layers not in SUPPORTED or not ``source``'s own class."""
    return [(layer.name, type(layer).__name__) for layer in layers
            if type(layer).__name__ not in SUPPORTED
            or getattr(source.layers, type(layer).__name__, None) is not type(layer)]


def layer_from_config(class_name, config, *, source, target, to_keras3, extra=None, rank=None):
    """A new ``target`` layer of ``class_name`` from ``source``'s ``config`` of one.

    Args:
      class_name: str, the layer's class name (the same in both Keras).
      config: dict, the source layer's ``get_config()``.
      source, target: the two Keras modules (``keras`` and ``tf_keras``).
      to_keras3: bool, the direction (picks the renamed keys' side).
      extra: optional dict, classes outside ``target.layers`` (tf-vib's own layers).
      rank: optional int, the rank of the built layer's input.

    Returns:
      The unbuilt target layer.
    """
    classes = extra or {}
    source_cls = classes.get(class_name, (None, None))[0] or getattr(source.layers, class_name)
    target_cls = classes.get(class_name, (None, None))[1] or getattr(target.layers, class_name)
    config = dict(config)
    sublayers = {}
    for key in _SUBLAYER_KEYS:
        if isinstance(config.get(key), dict):
            inner = config.pop(key)
            sublayers[key] = layer_from_config(inner["class_name"], inner["config"], source=source,
                                               target=target, to_keras3=to_keras3, extra=extra)
    renames = _RENAMED.get(class_name, {})
    if to_keras3:
        renames = {tf_key: k3_key for k3_key, tf_key in renames.items()}
    config = {renames.get(key, key): value for key, value in config.items()}
    if class_name in ("BatchNormalization", "LayerNormalization") and isinstance(config.get("axis"), (list, tuple)):
        # tf_keras counts the axes from the front once built (the user's -1 becomes 2) and
        # lists them; Keras 3 keeps -1, and BatchNormalization takes one int
        axes = [axis - rank if rank and axis >= 0 else axis for axis in config["axis"]]
        config["axis"] = axes[0] if class_name == "BatchNormalization" and len(axes) == 1 else axes
    kwargs = {key: _value(value, source=source, target=target) for key, value in config.items()}
    kwargs = _accepted(target_cls, source_cls, kwargs, what=f"layer {config.get('name')!r} ({class_name})")
    return target_cls(**kwargs, **sublayers)


def _value(value, *, source, target):
    """A config value in ``target``'s terms: policies by name, serialized objects re-keyed."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        if value["class_name"] in ("DTypePolicy", "Policy", "FloatDTypePolicy"):
            return value["config"]["name"]
        namespace = (value.get("module") or "").rpartition(".")[2]
        if namespace in _NAMESPACES:
            target_cls = getattr(getattr(target, namespace), value["class_name"], None)
            source_cls = getattr(getattr(source, namespace), value["class_name"], None)
            if target_cls is not None and source_cls is not None:
                inner = _accepted(target_cls, source_cls, dict(value["config"]),
                                  what=f"{namespace[:-1]} {value['class_name']}")
                return {"class_name": value["class_name"], "config": inner}
        return {"class_name": value["class_name"], "config": value["config"]}
    if isinstance(value, list):  # tf_keras's tracked ListWrapper, which Keras 3 refuses as an int
        return [_value(v, source=source, target=target) for v in value]
    return value


def _accepted(target_cls, source_cls, kwargs, *, what):
    """``kwargs`` without the keys ``target_cls`` does not take; such a key must hold its
    default (or None/False), since dropping a set one would change the layer."""
    accepted = _parameters(target_cls)
    defaults = _defaults(source_cls)
    bases = {klass.__name__ for klass in target_cls.__mro__}
    kept = {}
    for key, value in kwargs.items():
        if key in accepted or _BASE_CLASS_KEYS.get(key) in bases:
            kept[key] = value
        elif key not in _HOW_NOT_WHAT and not (value is None or value is False or defaults.get(key, value) == value
                                               and key in defaults or (key, value) == ("trainable", True)):
            raise ValueError(
                f"The bridge cannot map {what}: its {key}={value!r} has no equivalent in "
                f"{target_cls.__module__.partition('.')[0]}.{target_cls.__name__}"
            )
    return kept


def _parameters(cls):
    """The keyword arguments ``cls()`` takes: its own and, through each ``**kwargs``, its bases'."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            parameters = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
            if not any(p.kind == p.VAR_KEYWORD for p in parameters):
                return names - {"self"}
    return (names | _BASE_KEYS) - {"self"}


def _defaults(cls):
    defaults = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            defaults.update({p.name: p.default for p in inspect.signature(klass.__init__).parameters.values()
                             if p.default is not p.empty})
    return defaults
