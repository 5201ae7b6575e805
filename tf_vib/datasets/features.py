"""Per-frame CNN features for the CNN-LSTM path: a ``keras.applications`` backbone
(``include_top=False, pooling="avg"``) turns clips ``(n, frames, h, w, c)`` into
sequences ``(n, frames, feature_dim)``, optionally cached to disk.

ImageNet weights are read from the Keras cache only, never downloaded.
"""

import dataclasses
import hashlib
import os
import pathlib

import numpy as np

from tf_vib._checks import check_choice, check_int, check_seed, check_size
from tf_vib._keras import keras, tf
from tf_vib.datasets.sequences import SequenceDataset

__all__ = ["BACKBONES", "build_extractor", "cnn_features", "extract_features", "weights_path"]


@dataclasses.dataclass(frozen=True)
class _Backbone:
    constructor: str
    default_size: int
    min_size: int
    # Rescaling(scale, offset) equal to the backbone's preprocess_input on 0..255 RGB pixels;
    # None when the model normalises its inputs itself (EfficientNet).
    rescale: tuple | None
    weights_file: str


_BACKBONES = {
    "inception_v3": _Backbone("InceptionV3", 299, 75, (1 / 127.5, -1.0),
                              "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "efficientnet_b0": _Backbone("EfficientNetB0", 224, 32, None, "efficientnetb0_notop.h5"),
    "efficientnet_b1": _Backbone("EfficientNetB1", 240, 32, None, "efficientnetb1_notop.h5"),
    "mobilenet_v2": _Backbone(
        "MobileNetV2", 224, 32, (1 / 127.5, -1.0),
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"),
}
#: Backbone names accepted by `build_extractor` and `cnn_features`.
BACKBONES = tuple(_BACKBONES)
_MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_MOBILENET_ROWS = (96, 128, 160, 192, 224)
_CACHE_FORMAT = 1


def _check_weights(weights):
    if weights is None or weights == "imagenet":
        return weights
    if isinstance(weights, (str, os.PathLike)) and pathlib.Path(weights).is_file():
        return pathlib.Path(weights)
    raise ValueError(
        f'`weights` must be "imagenet", None (random weights) or the path of a weights file; '
        f"received {weights!r}"
    )


def _check_args(backbone, weights, input_size, alpha):
    check_choice("backbone", backbone, BACKBONES)
    spec = _BACKBONES[backbone]
    weights = _check_weights(weights)
    size = check_size("input_size", spec.default_size if input_size is None else input_size,
                      minimum=spec.min_size)
    if backbone != "mobilenet_v2" and alpha is not None:
        raise ValueError(f"`alpha` applies to backbone='mobilenet_v2' only; received "
                         f"alpha={alpha!r} with backbone={backbone!r}")
    if backbone == "mobilenet_v2":
        alpha = 1.0 if alpha is None else alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"`alpha` must be a positive float; received {alpha!r}")
        if weights == "imagenet" and alpha not in _MOBILENET_ALPHAS:
            raise ValueError(f"`alpha` must be one of {_MOBILENET_ALPHAS} with ImageNet "
                             f"weights; received {alpha!r}")
    return spec, weights, size, alpha


def weights_path(backbone, *, input_size=None, alpha=None):
    """Where Keras keeps a backbone's ImageNet weights (no-top), whether or not it exists.

    Keras reads ``~/.keras/models/<file>`` (``/tmp/.keras/models`` when ``~/.keras`` is
    not writable); put the file there to use ``weights="imagenet"`` offline.

    Args:
      backbone: one of `BACKBONES`.
      input_size: int, pair or None; picks MobileNetV2's weight file (224 unless the size
        is square and one of 96, 128, 160, 192, 224).
      alpha: float or None, MobileNetV2's width multiplier (default 1.0).

    Returns:
      A `pathlib.Path`.
    """
    spec, _, size, alpha = _check_args(backbone, "imagenet", input_size, alpha)
    rows = size[0] if size[0] == size[1] and size[0] in _MOBILENET_ROWS else 224
    base = os.path.join(os.path.expanduser("~"), ".keras")
    if not os.access(base, os.W_OK):  # the same fallback as keras.utils.get_file
        base = os.path.join("/tmp", ".keras")
    return pathlib.Path(base, "models", spec.weights_file.format(alpha=float(alpha or 1.0),
                                                                  rows=rows))


def _seed_random_weights(model, seed):
    """Re-draw every random kernel from a seeded initializer, so ``weights=None`` gives the
    same network in every call (train and test features must come from one network)."""
    pairs = (("kernel", "kernel_initializer"), ("depthwise_kernel", "depthwise_initializer"))
    for index, layer in enumerate(model.layers):
        for weight_name, initializer_name in pairs:
            variable = getattr(layer, weight_name, None)
            initializer = getattr(layer, initializer_name, None)
            if isinstance(variable, tf.Variable) and initializer is not None:
                config = {**initializer.get_config(), "seed": seed * 100_003 + index}
                seeded = type(initializer).from_config(config)
                variable.assign(seeded(variable.shape, dtype=variable.dtype))


def _calibrate_batch_norm(model, seed):
    """Set every batch-norm layer's moving statistics to those of one batch of seeded noise
    images. Untrained networks with the default statistics (mean 0, variance 1) shrink their
    activations layer after layer until the features are ~1e-10; calibrated ones keep them
    near unit scale. The noise does not depend on the data, so every call is the same network."""
    layers = [layer for layer in model.submodules
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    noise = np.random.default_rng(seed).uniform(0.0, 255.0, (16, *model.input_shape[1:]))
    try:
        for layer in layers:
            layer.momentum = 0.0  # one update replaces the moving statistics by the batch's
        model(noise.astype(np.float32), training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def build_extractor(backbone="inception_v3", *, weights="imagenet", input_size=None,
                    alpha=None, seed=0):
    """A frame feature extractor: RGB pixels in 0..255 -> one feature vector per image.

    The model is ``Rescaling`` (the backbone's ``preprocess_input``) followed by the
    ``keras.applications`` backbone with ``include_top=False, pooling="avg"``. Feature
    sizes: inception_v3 2048, efficientnet_b0/b1 1280, mobilenet_v2 1280 (for alpha <= 1).
    With ``weights=None`` InceptionV3 runs on frames as small as 75x75, the others on 32x32.

    Args:
      backbone: str, default "inception_v3". One of `BACKBONES`.
      weights: "imagenet", None or a path, default "imagenet". "imagenet" reads the file
        `weights_path` names and raises if it is missing (tf-vib never downloads); None
        gives random weights drawn from ``seed``, with batch-norm statistics set on seeded
        noise images so that the features keep a usable scale (the same network for the
        same seed, so train and test features match).
      input_size: int, (height, width) or None, default None (299 for inception_v3, 240 for
        efficientnet_b1, else 224).
      alpha: float or None, default None. MobileNetV2's width multiplier (1.0).
      seed: int, default 0. Seed of the random weights when ``weights=None``.

    Returns:
      A `keras.Model` from ``(height, width, 3)`` to ``(feature_dim,)``.

    Example:

    >>> extractor = build_extractor("inception_v3", weights=None, input_size=75)
    >>> extractor.output_shape
    (None, 2048)
    """
    spec, weights, size, alpha = _check_args(backbone, weights, input_size, alpha)
    seed = check_seed(seed)
    if weights == "imagenet":
        path = weights_path(backbone, input_size=size, alpha=alpha)
        if not path.is_file():
            raise FileNotFoundError(
                f"ImageNet weights for backbone={backbone!r} are not in the Keras cache "
                f"(expected {path}); tf-vib never downloads. Copy the file there, pass "
                "weights=<path of the file>, or weights=None for random weights."
            )
    kwargs = {"alpha": alpha} if backbone == "mobilenet_v2" else {}
    inputs = keras.Input((*size, 3), name="pixels")
    x = inputs if spec.rescale is None else keras.layers.Rescaling(*spec.rescale)(inputs)
    base = getattr(keras.applications, spec.constructor)(
        include_top=False, pooling="avg", input_shape=(*size, 3),
        weights="imagenet" if weights == "imagenet" else None, **kwargs)
    if weights is not None and weights != "imagenet":
        base.load_weights(str(weights))
    model = keras.Model(inputs, base(x), name=f"{backbone}_features")
    if weights is None:
        _seed_random_weights(base, seed)
        _calibrate_batch_norm(model, seed)
    return model


def _weights_tag(weights, seed):
    if weights is None:
        return f"random{seed}"
    if weights == "imagenet":
        return "imagenet"
    stat = weights.stat()
    return f"file:{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _cache_file(cache, frames, backbone, tag, size, alpha):
    digest = hashlib.sha256()
    key = (_CACHE_FORMAT, backbone, tag, size, alpha, frames.shape, frames.dtype.str)
    digest.update(repr(key).encode())
    digest.update(memoryview(np.ascontiguousarray(frames)).cast("B"))
    label = "imagenet" if tag == "imagenet" else "random" if tag.startswith("random") else "file"
    return cache / f"{backbone}-{label}-{size[0]}x{size[1]}-{digest.hexdigest()[:24]}.npy"


def _check_frames(frames):
    if not isinstance(frames, np.ndarray) or frames.ndim != 5 or frames.shape[-1] not in (1, 3):
        raise ValueError(
            "`frames` must be a NumPy array of shape (clips, frames, height, width, 1 or 3); "
            f"received {type(frames).__name__} of shape {getattr(frames, 'shape', None)}"
        )
    if frames.dtype != np.uint8 and not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"`frames` must be uint8 (0..255) or float (0..1); received dtype "
                         f"{frames.dtype}")
    return frames


def cnn_features(frames, *, backbone="inception_v3", weights="imagenet", input_size=None,
                 alpha=None, seed=0, batch_size=64, cache=None):
    """CNN features of every frame of every clip.

    Frames are resized (bilinear, antialiased) to the backbone's ``input_size``; grey
    frames are repeated to RGB; uint8 frames are read as 0..255 and float frames as 0..1
    (what every loader here returns).

    Args:
      frames: array of shape ``(clips, frames, height, width, 1 or 3)``.
      backbone, weights, input_size, alpha, seed: as in `build_extractor`.
      batch_size: int, default 64. Images per forward pass.
      cache: path or None, default None. A folder for ``.npy`` files keyed by the backbone,
        weights, input size and a SHA-256 of ``frames``; a second call with the same key
        loads the file instead of running the CNN.

    Returns:
      float32 array of shape ``(clips, frames, feature_dim)``.

    Example:

    >>> data = tf_vib.datasets.synthetic_actions(20, size=32)
    >>> feats = cnn_features(data.x_train, backbone="mobilenet_v2", weights=None,
    ...                      input_size=32, cache="features/")
    """
    frames = _check_frames(frames)
    spec, weights, size, alpha = _check_args(backbone, weights, input_size, alpha)
    seed = check_seed(seed)
    batch_size = check_int("batch_size", batch_size)
    if cache is not None:
        if not isinstance(cache, (str, os.PathLike)) or pathlib.Path(cache).is_file():
            raise ValueError(f"`cache` must be None or a folder path; received {cache!r}")
        cache = pathlib.Path(cache).expanduser()
        path = _cache_file(cache, frames, backbone, _weights_tag(weights, seed), size, alpha)
        if path.is_file():
            return np.load(path)
    extractor = build_extractor(backbone, weights=weights, input_size=size, alpha=alpha,
                                seed=seed)
    scale = 1.0 if frames.dtype == np.uint8 else 255.0
    resize = frames.shape[2:4] != size

    @tf.function(reduce_retracing=True)
    def run(batch):
        images = tf.cast(batch, tf.float32) * scale
        if batch.shape[-1] == 1:
            images = tf.image.grayscale_to_rgb(images)
        if resize:
            images = tf.image.resize(images, size, antialias=True)
        return extractor(images, training=False)

    images = frames.reshape(-1, *frames.shape[2:])
    out = np.concatenate(
        [run(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)]
        or [np.zeros((0, extractor.output_shape[-1]), np.float32)]
    ).astype(np.float32).reshape(*frames.shape[:2], -1)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(partial, out)
        os.replace(partial, path)  # atomic: a crash never leaves a truncated cache file
    return out


def extract_features(dataset, *, backbone="inception_v3", weights="imagenet", input_size=None,
                     alpha=None, seed=0, batch_size=64, cache=None):
    """A video `SequenceDataset` with its frames replaced by their CNN features.

    Args:
      dataset: a `SequenceDataset` of clips ``(n, frames, height, width, channels)``.
      backbone, weights, input_size, alpha, seed, batch_size, cache: as in `cnn_features`.

    Returns:
      A `SequenceDataset` with ``x`` of shape ``(n, frames, feature_dim)``; ``info`` gains
      ``"features"``.

    Example:

    >>> clips = tf_vib.datasets.synthetic_actions(20, size=32)
    >>> data = extract_features(clips, backbone="mobilenet_v2", weights=None, input_size=32)
    """
    if not isinstance(dataset, SequenceDataset):
        raise TypeError(f"`dataset` must be a SequenceDataset; received {type(dataset).__name__}")
    kwargs = dict(backbone=backbone, weights=weights, input_size=input_size, alpha=alpha,
                  seed=seed, batch_size=batch_size, cache=cache)
    x_train = cnn_features(dataset.x_train, **kwargs)
    x_test = cnn_features(dataset.x_test, **kwargs)
    _, _, size, alpha = _check_args(backbone, weights, input_size, alpha)
    described = {"backbone": backbone, "weights": None if weights is None else str(weights),
                 "input_size": size, "alpha": alpha, "seed": seed,
                 "feature_dim": x_train.shape[-1]}
    return dataclasses.replace(dataset, x_train=x_train, x_test=x_test,
                               info={**dataset.info, "features": described})
