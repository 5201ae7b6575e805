"""Clips from video files: N frames sampled uniformly per clip, from one file
(`read_clip`) or from a folder of class folders (`video_folder`).

OpenCV (``cv2``) is imported only when a clip is read; nothing downloads.
"""

import concurrent.futures
import os
import pathlib
import re
import warnings

import numpy as np

from tf_vib._checks import (
    check_choice,
    check_existing_dir,
    check_fraction,
    check_int,
    check_seed,
    check_size,
    require_module,
)
from tf_vib.datasets.sequences import SequenceDataset, stratified_indices

__all__ = ["VIDEO_EXTENSIONS", "sample_indices", "class_folders", "read_clip", "video_folder"]

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mpg", ".mpeg", ".mkv", ".mov", ".webm", ".m4v")


def _cv2():
    return require_module("cv2", purpose="Reading video files", package="opencv-python-headless")


def sample_indices(n_available, frames):
    """Centres of ``frames`` equal segments of ``[0, n_available)``; short clips repeat frames."""
    return np.minimum((np.arange(frames) + 0.5) * n_available / frames, n_available - 1).astype(int)


def _to_pixels(frame_rgb, size, channels, cv2):
    height, width = size
    area = frame_rgb.shape[0] * frame_rgb.shape[1] > height * width
    frame = cv2.resize(frame_rgb, (width, height),
                       interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)
    if channels == 1:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[..., None]
    return frame


def _finish(pixels, dtype):
    return pixels if dtype == "uint8" else pixels.astype(np.float32) / np.float32(255.0)


def _read_sampled(path, frames, cv2):
    """RGB frames at the sampled indices, or None if the file cannot be decoded."""
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
        wanted = set(sample_indices(count, frames).tolist()) if count > 0 else set()
        kept = {}
        for index in range(max(wanted, default=-1) + 1):
            if not capture.grab():  # grab() skips the colour conversion of unused frames
                break
            if index in wanted:
                ok, frame = capture.retrieve()
                if ok:
                    kept[index] = frame
    finally:
        capture.release()
    if wanted and len(kept) == len(wanted):
        return [cv2.cvtColor(kept[i], cv2.COLOR_BGR2RGB) for i in sample_indices(count, frames)]
    return _read_sampled_all(path, frames, cv2)  # no or a wrong frame count in the container


def _read_sampled_all(path, frames, cv2):
    capture = cv2.VideoCapture(str(path))
    decoded = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded.append(frame)
    finally:
        capture.release()
    if not decoded:
        return None
    wanted = sample_indices(len(decoded), frames)
    return [cv2.cvtColor(decoded[i], cv2.COLOR_BGR2RGB) for i in wanted]


def _check_clip_args(frames, size, channels, dtype):
    return (
        check_int("frames", frames),
        check_size("size", size),
        check_choice("channels", channels, (1, 3)),
        check_choice("dtype", dtype, ("float32", "uint8")),
    )


def read_clip(path, *, frames=8, size=64, channels=3, dtype="float32"):
    """Read ``frames`` frames sampled uniformly from a video file.

    Frame ``k`` is the middle frame of the ``k``-th of ``frames`` equal segments of the
    clip; clips shorter than ``frames`` repeat frames. Frames are resized (area
    interpolation when shrinking) and converted to RGB (or grey).

    Args:
      path: path of a video file OpenCV can decode.
      frames: int, default 8. Frames to sample.
      size: int or (height, width), default 64. Output frame size.
      channels: 1 or 3, default 3.
      dtype: "float32" (values in [0, 1]) or "uint8" (0..255, 4x less memory), default
        "float32".

    Returns:
      Array of shape ``(frames, height, width, channels)``.

    Example:

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = tf_vib.datasets.write_videos(folder, n_per_class=2, classes=("left", "right"))
    >>> clip = read_clip(sorted(folder.rglob("*.avi"))[0], frames=8, size=32)
    >>> clip.shape
    (8, 32, 32, 3)
    """
    frames, size, channels, dtype = _check_clip_args(frames, size, channels, dtype)
    if not isinstance(path, (str, os.PathLike)) or not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"`path` must be an existing video file; received {path!r}")
    cv2 = _cv2()
    sampled = _read_sampled(path, frames, cv2)
    if sampled is None:
        raise ValueError(f"OpenCV could not decode any frame of `path` {str(path)!r}")
    return _finish(np.stack([_to_pixels(f, size, channels, cv2) for f in sampled]), dtype)


def _is_video(path, extensions):
    return path.suffix.lower() in extensions and path.is_file()


def class_folders(root, extensions=VIDEO_EXTENSIONS):
    """Sorted names of the sub-folders of ``root`` holding at least one video at any depth
    (so a folder of split lists inside ``root`` is not a class)."""
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".")
        and any(_is_video(q, extensions) for q in p.rglob("*"))
    )


def _find_clips(root, classes, extensions):
    """``(path, class name)`` of every video under ``root/<class>/``, sorted."""
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    explicit = classes is not None
    if not explicit:
        classes = folders
    else:
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise TypeError(f"`classes` must be a list of folder names; received {classes!r}")
        missing = [c for c in classes if c not in folders]
        if missing or not classes:
            raise ValueError(
                f"`classes` must name sub-folders of {str(root)!r}; received {list(classes)!r}, "
                f"and {missing} are not among the folders {folders}"
            )
    clips, with_videos = [], []
    for name in classes:
        found = sorted(p for p in (root / name).rglob("*") if _is_video(p, extensions))
        if found:
            with_videos.append(name)
        clips.extend((p, name) for p in found)
    if explicit and len(with_videos) < len(classes):
        empty = [c for c in classes if c not in with_videos]
        raise ValueError(f"`classes` {empty} have no video files ({', '.join(extensions)}) "
                         f"under {str(root)!r}")
    return clips, with_videos


def _subsample(clips, max_per_class):
    """At most ``max_per_class`` clips per class, evenly spread over each sorted list."""
    if max_per_class is None:
        return clips
    kept = []
    for name in dict.fromkeys(name for _, name in clips):
        own = [c for c in clips if c[1] == name]
        kept.extend(own[i] for i in sample_indices(len(own), min(max_per_class, len(own))))
    return kept


def _split(clips, labels, *, split, group_pattern, test_fraction, seed):
    """Boolean test mask, mask of clips to use, and a description of the split."""
    use = np.ones(len(clips), bool)
    if split is not None:
        train_names, test_names = ({pathlib.Path(n).name.lower() for n in part} for part in split)
        names = [path.name.lower() for path, _ in clips]
        test = np.array([n in test_names for n in names])
        use = test | np.array([n in train_names for n in names])
        return test, use, "official"
    groups = None
    if group_pattern is not None:
        found = [re.search(group_pattern, path.name) for path, _ in clips]
        if all(found):
            groups = np.array([int(m.group(1)) for m in found])
    if groups is not None and len(np.unique(groups)) >= 2:
        unique = np.unique(groups)
        n_test = min(max(1, round(test_fraction * len(unique))), len(unique) - 1)
        held = np.random.default_rng(seed).permutation(unique)[:n_test]
        return np.isin(groups, held), use, f"groups {sorted(held.tolist())} held out"
    _, held_out = stratified_indices(labels, test_fraction, seed=seed)
    test = np.zeros(len(clips), bool)
    test[held_out] = True
    return test, use, "stratified"


def video_folder(root, *, frames=8, size=64, channels=3, classes=None, test_fraction=0.25,
                 seed=0, split=None, group_pattern=None, max_per_class=None, dtype="float32",
                 extensions=VIDEO_EXTENSIONS, workers=None, name=None):
    """Clips from a folder with one sub-folder of videos per class.

    Videos are found at any depth under ``root/<class>/`` (so UCF11's group folders work).
    The test set is, in order of preference: the files listed in ``split``; whole groups
    (clips whose names give the same group number under ``group_pattern``, e.g. the same
    actor and scene) drawn with ``seed``, so no group is on both sides; otherwise a
    stratified ``test_fraction`` of each class. ``info["split"]`` says which was used.
    Files OpenCV cannot decode are skipped with a warning and listed in
    ``info["unreadable"]``.

    Args:
      root: path of the folder.
      frames, size, channels, dtype: as in `read_clip`. Use dtype="uint8" for large sets.
      classes: list of str or None, default None (every sub-folder with videos, sorted).
      test_fraction: float in (0, 1), default 0.25. Share of clips, or of groups.
      seed: int, default 0.
      split: None or a pair ``(train_files, test_files)`` of file names; clips in neither
        list are left out.
      group_pattern: str or None, default None. Regular expression whose first group is the
        clip's group number, searched in the file name.
      max_per_class: int or None, default None. Read at most this many clips per class,
        evenly spread over the sorted file names (for quick runs).
      extensions: tuple of str, default `VIDEO_EXTENSIONS`.
      workers: int or None, default None (up to 8 threads). Clips decoded in parallel.
      name: str or None, the data set's name; default the folder's name.

    Returns:
      A `SequenceDataset` with ``x`` of shape ``(n, frames, height, width, channels)``.

    Example:

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = tf_vib.datasets.write_videos(folder, n_per_class=2, classes=("left", "right"))
    >>> data = tf_vib.datasets.video_folder(folder, frames=8, size=64)
    >>> data.class_names
    ('left', 'right')
    """
    root = check_existing_dir("root", root)
    frames, size, channels, dtype = _check_clip_args(frames, size, channels, dtype)
    test_fraction = check_fraction("test_fraction", test_fraction)
    seed = check_seed(seed)
    if max_per_class is not None:
        max_per_class = check_int("max_per_class", max_per_class, minimum=2)
    workers = check_int("workers", workers) if workers is not None else min(8, os.cpu_count() or 1)
    if split is not None and (
        isinstance(split, str)
        or len(split) != 2
        or not all(not isinstance(p, str) and all(isinstance(n, str) for n in p) for p in split)
    ):
        raise ValueError(f"`split` must be None or a pair (train_files, test_files) of lists "
                         f"of file names; received {split!r:.200}")
    if group_pattern is not None:
        group_pattern = re.compile(group_pattern)
    if (isinstance(extensions, str) or not extensions
            or not all(isinstance(e, str) and e.startswith(".") for e in extensions)):
        raise ValueError(f"`extensions` must be a tuple of suffixes such as ('.avi', '.mp4'); "
                         f"received {extensions!r}")
    extensions = tuple(e.lower() for e in extensions)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"`name` must be a str or None; received {name!r}")

    clips, class_names = _find_clips(root, classes, extensions)
    if not clips:
        raise ValueError(
            f"`root` {str(root)!r} has no video files ({', '.join(extensions)}) in "
            "class sub-folders; expected root/<class>/<clip>.avi"
        )
    clips = _subsample(clips, max_per_class)
    labels = np.array([class_names.index(c) for _, c in clips], np.int64)
    test, use, how = _split(clips, labels, split=split, group_pattern=group_pattern,
                            test_fraction=test_fraction, seed=seed)

    cv2 = _cv2()
    chosen = np.flatnonzero(use)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda i: _read_sampled(clips[i][0], frames, cv2), chosen))
    unreadable = [str(clips[i][0]) for i, d in zip(chosen, decoded, strict=True) if d is None]
    if unreadable:
        warnings.warn(f"Skipped {len(unreadable)} video files OpenCV could not decode, e.g. "
                      f"{unreadable[0]}", stacklevel=2)
    good = [(i, d) for i, d in zip(chosen, decoded, strict=True) if d is not None]
    x = np.zeros((len(good), frames, *size, channels), np.uint8)
    for row, (_, sampled) in enumerate(good):
        x[row] = np.stack([_to_pixels(f, size, channels, cv2) for f in sampled])
    index = np.array([i for i, _ in good], np.int64)
    is_test = test[index]
    if not is_test.any() or is_test.all():
        raise ValueError(f"The {how} split of {str(root)!r} left the train or test set empty.")
    x = _finish(x, dtype)
    return SequenceDataset(
        x[~is_test],
        labels[index[~is_test]],
        x[is_test],
        labels[index[is_test]],
        n_classes=len(class_names),
        name=name or root.name,
        class_names=tuple(class_names),
        info={"source": str(root), "split": how, "files_train": [str(clips[i][0]) for i in
              index[~is_test]], "files_test": [str(clips[i][0]) for i in index[is_test]],
              "unreadable": unreadable, "left_out": int((~use).sum()), "frames": frames,
              "size": size},
    )
