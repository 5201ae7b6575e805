"""The standard action recognition sets: UCF11, UCF101 and HMDB51 from their video
files with their split conventions, and UCF101 as prepared by tensorflow-datasets.

Nothing downloads: the videos (or the prepared tensorflow-datasets records) must
already be on disk.
"""

import numpy as np

from tf_vib._checks import (
    check_choice,
    check_existing_dir,
    check_int,
    require_module,
)
from tf_vib.datasets.sequences import SequenceDataset
from tf_vib.datasets.video import (
    VIDEO_EXTENSIONS,
    _check_clip_args,
    _cv2,
    _finish,
    _to_pixels,
    class_folders,
    sample_indices,
    video_folder,
)

__all__ = ["ucf11", "ucf101", "hmdb51", "ucf101_tfds"]

_UCF11_GROUP = r"_(\d+)_\d+\.\w+$"  # v_biking_01_03.mpg: group 01, clip 03
_UCF101_GROUP = r"_g(\d+)_c\d+\.\w+$"  # v_ApplyEyeMakeup_g08_c01.avi: group 08, clip 01


def _find_split_files(candidates, names):
    for folder in candidates:
        if folder is not None and all((folder / n).is_file() for n in names):
            return folder
    return None


def _read_list(path):
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def ucf11(root, **kwargs):
    """UCF11 (YouTube Action): ``root/<class>/v_<class>_<group>/v_<class>_<group>_<clip>.mpg``.

    The test set is whole groups (25 per class, each one actor and scene), a
    ``test_fraction`` of them drawn with ``seed``, so that no scene is in both sets.

    Args:
      root: path of the ``UCF11_updated_mpg`` (or ``action_youtube_naudio``) folder.
      **kwargs: any keyword argument of `video_folder`.

    Returns:
      A `SequenceDataset` of 11 classes.

    Example:

    (Needs the downloaded UCF11 folder, so it is not run in the tests.)

    >>> data = tf_vib.datasets.ucf11("UCF11_updated_mpg", frames=8, size=112, dtype="uint8")  # doctest: +SKIP
    """
    kwargs.setdefault("group_pattern", _UCF11_GROUP)
    kwargs.setdefault("name", "ucf11")
    return video_folder(root, **kwargs)


def ucf101(root, *, split_number=1, splits_dir=None, **kwargs):
    """UCF101: ``root/<class>/v_<class>_g<group>_c<clip>.avi``.

    Uses the official ``trainlist0<k>.txt`` / ``testlist0<k>.txt`` when found in
    ``splits_dir``, ``root/ucfTrainTestlist``, ``root`` or next to ``root``; otherwise
    holds out whole groups as `ucf11` does (the official split 1 holds out groups 1-7).
    Names are matched case-insensitively (the lists write "HandStandPushups", the folder
    "HandstandPushups"). A ``split`` passed in ``kwargs`` wins over the lists.

    Args:
      root: path of the ``UCF-101`` folder.
      split_number: 1, 2 or 3, default 1. Official split to use.
      splits_dir: path or None, default None. Folder of the official split lists.
      **kwargs: any keyword argument of `video_folder`.

    Returns:
      A `SequenceDataset` of 101 classes.

    Example:

    (Needs the downloaded UCF-101 folder, so it is not run in the tests.)

    >>> data = tf_vib.datasets.ucf101("UCF-101", frames=8, size=112, dtype="uint8")  # doctest: +SKIP
    """
    root = check_existing_dir("root", root)
    split_number = check_choice("split_number", split_number, (1, 2, 3))
    lists = (f"trainlist0{split_number}.txt", f"testlist0{split_number}.txt")
    if splits_dir is not None:
        splits_dir = check_existing_dir("splits_dir", splits_dir)
    found = _find_split_files(
        [splits_dir, root / "ucfTrainTestlist", root, root.parent / "ucfTrainTestlist"], lists)
    if found is not None and "split" not in kwargs:
        kwargs["split"] = tuple(_read_list(found / name) for name in lists)
    kwargs.setdefault("group_pattern", _UCF101_GROUP)
    kwargs.setdefault("name", "ucf101")
    return video_folder(root, **kwargs)


def hmdb51(root, *, split_number=1, splits_dir=None, **kwargs):
    """HMDB51: ``root/<class>/<clip>.avi``.

    Uses the official ``<class>_test_split<k>.txt`` files (1 = train, 2 = test, 0 =
    unused) when found in ``splits_dir``, ``root/testTrainMulti_7030_splits`` or ``root``
    for every class; otherwise a stratified split. A ``split`` passed in ``kwargs`` wins.

    Args:
      root: path of the folder of class folders.
      split_number: 1, 2 or 3, default 1.
      splits_dir: path or None, default None. Folder of the official split files.
      **kwargs: any keyword argument of `video_folder`.

    Returns:
      A `SequenceDataset` of 51 classes.

    Example:

    (Needs the downloaded HMDB51 folder, so it is not run in the tests.)

    >>> data = tf_vib.datasets.hmdb51("hmdb51", frames=8, size=112, dtype="uint8")  # doctest: +SKIP
    """
    root = check_existing_dir("root", root)
    split_number = check_choice("split_number", split_number, (1, 2, 3))
    if splits_dir is not None:
        splits_dir = check_existing_dir("splits_dir", splits_dir)
    classes = kwargs.get("classes") or class_folders(
        root, kwargs.get("extensions", VIDEO_EXTENSIONS))
    lists = [f"{c}_test_split{split_number}.txt" for c in classes]
    found = _find_split_files([splits_dir, root / "testTrainMulti_7030_splits", root], lists)
    if found is not None and "split" not in kwargs:
        parts = {"1": [], "2": []}
        for name in lists:
            for line in (found / name).read_text().splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[1] in parts:
                    parts[fields[1]].append(fields[0])
        kwargs["split"] = (parts["1"], parts["2"])
    kwargs.setdefault("name", "hmdb51")
    return video_folder(root, **kwargs)


_TFDS_CONFIGS = ("ucf101_1_256", "ucf101_1", "ucf101_2", "ucf101_3")


def ucf101_tfds(data_dir=None, *, config="ucf101_1_256", frames=8, size=64, channels=3,
                dtype="float32", max_per_class=None):
    """UCF101 as prepared by tensorflow-datasets, read without downloading.

    Args:
      data_dir: path or None, default None (tensorflow-datasets' default folder).
      config: one of "ucf101_1_256" (split 1, frames stored at 256x256), "ucf101_1",
        "ucf101_2", "ucf101_3"; default "ucf101_1_256".
      frames, size, channels, dtype: as in `read_clip`.
      max_per_class: int or None, default None. Keep the first clips of each class only.

    Returns:
      A `SequenceDataset` of 101 classes with tensorflow-datasets' train and test splits.

    Example:

    (Needs UCF-101 prepared by tensorflow-datasets, so it is not run in the tests.)

    >>> data = tf_vib.datasets.ucf101_tfds("~/tensorflow_datasets", frames=8, size=112)  # doctest: +SKIP
    """
    config = check_choice("config", config, _TFDS_CONFIGS)
    frames, size, channels, dtype = _check_clip_args(frames, size, channels, dtype)
    if max_per_class is not None:
        max_per_class = check_int("max_per_class", max_per_class)
    if data_dir is not None:
        data_dir = str(check_existing_dir("data_dir", data_dir))
    tfds = require_module("tensorflow_datasets", purpose="ucf101_tfds()",
                          package="tensorflow-datasets")
    cv2 = _cv2()
    try:
        (train, test), info = tfds.load(f"ucf101/{config}", split=["train", "test"],
                                        data_dir=data_dir, download=False, with_info=True)
    except Exception as error:  # tfds raises several types for "not prepared"
        raise FileNotFoundError(
            f"tensorflow-datasets has no prepared 'ucf101/{config}' in data_dir={data_dir!r} "
            f"({type(error).__name__}: {error}). tf-vib never downloads: prepare it with "
            f"`tfds build ucf101 --config {config}`, or use ucf101(root) on the video files."
        ) from error
    parts = []
    for dataset in (train, test):
        xs, ys, counts = [], [], {}
        for example in tfds.as_numpy(dataset):
            label = int(example["label"])
            if max_per_class is not None and counts.get(label, 0) >= max_per_class:
                continue
            counts[label] = counts.get(label, 0) + 1
            video = example["video"]
            xs.append([_to_pixels(video[i], size, channels, cv2)
                       for i in sample_indices(len(video), frames)])
            ys.append(label)
        pixels = np.zeros((len(xs), frames, *size, channels), np.uint8)
        pixels[:] = xs
        parts.append((_finish(pixels, dtype), np.array(ys, np.int64)))
    names = tuple(info.features["label"].names)
    (x_train, y_train), (x_test, y_test) = parts
    return SequenceDataset(x_train, y_train, x_test, y_test, n_classes=len(names),
                           name="ucf101", class_names=names,
                           info={"source": "tensorflow_datasets", "config": config,
                                 "frames": frames, "size": size})
