"""Data sets for tf-vib's examples, tests and benchmarks; nothing here downloads.

Every loader returns a `SequenceDataset` (float32 ``x`` of shape ``(n, time, ...)``,
int64 labels ``0..n_classes-1``):

- sequences: `digits_rows` (8x8 digits, one row per step), `uea` (UEA/UCR sets bundled
  with aeon, e.g. JapaneseVowels);
- videos: `synthetic_actions` (generated motions), `video_folder` and the `ucf11`,
  `ucf101`, `hmdb51`, `ucf101_tfds` action sets, turned into CNN feature sequences by
  `extract_features` / `cnn_features`.

`load(name, **kwargs)` calls any of them by name; `pad_sequences` pads sequences of different
lengths (e.g. a list of aeon series) into one array; `select_frames` keeps the frames a
frame-pruned model reads (``compress(..., frame_masks=True)``); `write_tfrecord` and
`read_tfrecords` put labelled sequences in TFRecord shards and stream them back as the
``tf.data.Dataset`` compress() reads without loading it.
"""

from tf_vib.datasets.action_sets import hmdb51, ucf11, ucf101, ucf101_tfds
from tf_vib.datasets.features import (
    BACKBONES,
    build_extractor,
    cnn_features,
    extract_features,
    weights_path,
)
from tf_vib.datasets.frames import select_frames
from tf_vib.datasets.padding import pad_sequences
from tf_vib.datasets.sequences import (
    SequenceDataset,
    digits_rows,
    stratified_split,
    uea,
    uea_names,
)
from tf_vib.datasets.synthetic import (
    DEFAULT_MOTIONS,
    MOTIONS,
    STATE_NAMES,
    render_clips,
    synthetic_actions,
    write_videos,
)
from tf_vib.datasets.tfrecord import read_tfrecords, write_tfrecord
from tf_vib.datasets.video import (
    VIDEO_EXTENSIONS,
    class_folders,
    read_clip,
    sample_indices,
    video_folder,
)

__all__ = [
    "SequenceDataset",
    "stratified_split",
    "pad_sequences",
    "select_frames",
    "write_tfrecord",
    "read_tfrecords",
    "load",
    "LOADERS",
    "digits_rows",
    "uea",
    "uea_names",
    "MOTIONS",
    "DEFAULT_MOTIONS",
    "STATE_NAMES",
    "synthetic_actions",
    "render_clips",
    "write_videos",
    "VIDEO_EXTENSIONS",
    "sample_indices",
    "class_folders",
    "read_clip",
    "video_folder",
    "ucf11",
    "ucf101",
    "hmdb51",
    "ucf101_tfds",
    "BACKBONES",
    "build_extractor",
    "cnn_features",
    "extract_features",
    "weights_path",
]

#: The loaders `load` knows, by name.
LOADERS = {
    "digits_rows": digits_rows,
    "uea": uea,
    "synthetic_actions": synthetic_actions,
    "video_folder": video_folder,
    "ucf11": ucf11,
    "ucf101": ucf101,
    "hmdb51": hmdb51,
    "ucf101_tfds": ucf101_tfds,
}


def load(name, /, *args, **kwargs):
    """Call a loader by name; a UEA/UCR set bundled with aeon may be named directly.

    Args:
      name: str. One of `LOADERS` ("digits_rows", "uea", "synthetic_actions",
        "video_folder", "ucf11", "ucf101", "hmdb51", "ucf101_tfds"), or a name from
        `uea_names()` such as "JapaneseVowels" (same as ``uea(name, **kwargs)``).
      *args, **kwargs: passed to the loader.

    Returns:
      The loader's `SequenceDataset`.

    Example:

    >>> data = tf_vib.datasets.load("JapaneseVowels")
    >>> clips = tf_vib.datasets.load("synthetic_actions", 10, size=16)
    """
    if isinstance(name, str) and name in LOADERS:
        return LOADERS[name](*args, **kwargs)
    try:
        bundled = uea_names()
    except ImportError:
        bundled = []
    if name in bundled:
        return uea(name, *args, **kwargs)
    raise ValueError(
        f"`name` must be a loader ({', '.join(LOADERS)}) or a UEA/UCR set bundled with aeon "
        f"({', '.join(bundled) or 'aeon is not installed'}); received {name!r}"
    )
