"""Generated action clips: short videos of a shape that moves in one way per class.

Small enough to train a pixel LSTM or a CNN-LSTM end to end in seconds, and with
random shapes, colours, positions, speeds, distractors and noise per clip so that a
model has to look at the motion, not at one pixel. Rendering is NumPy; only
`write_videos` needs OpenCV.
"""

import math
import pathlib

import numpy as np

from tf_vib._checks import (
    check_bool,
    check_choice,
    check_float,
    check_fraction,
    check_int,
    check_seed,
    require_module,
)
from tf_vib.datasets.sequences import SequenceDataset, stratified_indices

__all__ = ["MOTIONS", "DEFAULT_MOTIONS", "STATE_NAMES", "synthetic_actions", "render_clips",
           "write_videos"]

#: Every motion a class can be; "rotate" turns either way, "still" only jitters.
MOTIONS = ("left", "right", "up", "down", "rotate", "grow", "shrink", "still")
DEFAULT_MOTIONS = MOTIONS[:7]
_SHAPES = ("bar", "triangle", "ell")
_SUPERSAMPLE = 2  # render at twice the size and average, for soft edges


def _inside(shape, u, v):
    """Membership in a shape of half-size 1 centred at the origin, none rotation-symmetric."""
    if shape == "bar":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.4)
    if shape == "triangle":
        return (v >= -0.5) & (np.abs(u) <= (1.0 - v) / math.sqrt(3.0))
    horizontal = (np.abs(u) <= 1.0) & (v >= 0.4) & (v <= 1.0)
    vertical = (u >= -1.0) & (u <= -0.4) & (np.abs(v) <= 1.0)
    return horizontal | vertical


def _draw(canvas, grid, shape, colour, centre, radius, angle):
    rows, cols = grid
    dy, dx = (rows - centre[0]) / radius, (cols - centre[1]) / radius
    cos, sin = math.cos(angle), math.sin(angle)
    mask = _inside(shape, cos * dx + sin * dy, -sin * dx + cos * dy)
    canvas[mask] = colour


def _trajectory(motion, frames, size, rng):
    """Centres (frames, 2) as (row, col), radii (frames,) and angles (frames,) of one clip."""
    t = np.arange(frames) / max(frames - 1, 1)
    radius = np.full(frames, size * rng.uniform(0.12, 0.18))
    if motion in ("grow", "shrink"):
        growth = rng.uniform(1.6, 2.4)
        start = size * rng.uniform(0.08, 0.11) if motion == "grow" else size * 0.1 * growth
        radius = start * (growth if motion == "grow" else 1.0 / growth) ** t
    spin = rng.uniform(0.8, 1.6) * rng.choice([-1.0, 1.0]) if motion == "rotate" else 0.0
    angle = rng.uniform(0.0, 2.0 * math.pi) + spin * t
    margin = radius.max() * 1.1
    centre = rng.uniform(margin, size - margin, size=2)
    if motion in ("left", "right", "up", "down"):
        axis = 1 if motion in ("left", "right") else 0
        distance = size * rng.uniform(0.3, 0.45)
        start = rng.uniform(margin, max(margin, size - margin - distance))
        sign = 1.0 if motion in ("right", "down") else -1.0
        centre[axis] = start if sign > 0 else size - start
        path = np.outer(sign * distance * t, np.eye(2)[axis])
    else:
        path = np.zeros((frames, 2))
    jitter = np.cumsum(rng.normal(0.0, size * 0.008, size=(frames, 2)), axis=0)
    return centre + path + jitter, radius, angle


def _check_motions(classes):
    if isinstance(classes, str) or not isinstance(classes, (tuple, list)) or len(classes) < 2:
        raise ValueError(
            f"`classes` must be a list of at least 2 motions from {MOTIONS}; received {classes!r}"
        )
    for motion in classes:
        check_choice("classes", motion, MOTIONS)
    if len(set(classes)) != len(classes):
        raise ValueError(f"`classes` must not repeat a motion; received {classes!r}")
    return tuple(classes)


#: What `render_clips(..., return_states=True)` gives per frame, for the moving shape.
STATE_NAMES = ("row", "col", "radius", "sin_angle", "cos_angle")


def render_clips(labels, *, classes=DEFAULT_MOTIONS, frames=8, size=32, channels=3,
                 noise=0.05, distractors=1, seed=0, return_states=False):
    """Render one clip per label; ``labels[i]`` indexes ``classes``.

    Args:
      labels: sequence of int in ``[0, len(classes))``.
      classes, frames, size, channels, noise, distractors, seed: as in `synthetic_actions`.
      return_states: bool, default False. Also return the moving shape's state in every
        frame (`STATE_NAMES`: centre row and column and radius as fractions of ``size``, and
        the sine and cosine of its angle): targets for training a frame encoder.

    Returns:
      float32 array of shape ``(len(labels), frames, size, size, channels)`` in [0, 1], and
      with ``return_states`` a float32 array of shape ``(len(labels), frames, 5)``.
    """
    classes = _check_motions(classes)
    frames = check_int("frames", frames)
    size = check_int("size", size, minimum=8)
    channels = check_choice("channels", channels, (1, 3))
    noise = check_float("noise", noise, low=0.0, allow_low=True, high=1.0, allow_high=True)
    distractors = check_int("distractors", distractors, minimum=0)
    seed = check_seed(seed)
    check_bool("return_states", return_states)
    labels = np.asarray(labels)
    if labels.ndim != 1 or (len(labels) and not 0 <= labels.min() <= labels.max() < len(classes)):
        raise ValueError(
            f"`labels` must be a 1-D sequence of ints in [0, {len(classes)}); received {labels!r}"
        )
    rng = np.random.default_rng(seed)
    fine = size * _SUPERSAMPLE
    axis = (np.arange(fine) + 0.5) / _SUPERSAMPLE
    grid = np.meshgrid(axis, axis, indexing="ij")
    clips = np.empty((len(labels), frames, size, size, 3), np.float32)
    states = np.empty((len(labels), frames, len(STATE_NAMES)), np.float32)
    for i, label in enumerate(labels):
        background = rng.uniform(0.0, 0.25, 3)
        # (motion, colour, scale): the actor first, then smaller and dimmer distractors
        actors = [(classes[label], rng.uniform(0.55, 1.0, 3), 1.0)]
        actors += [("still", rng.uniform(0.3, 0.6, 3), 0.6) for _ in range(distractors)]
        paths = [(rng.choice(_SHAPES), colour, scale, *_trajectory(m, frames, size, rng))
                 for m, colour, scale in actors]
        centres, radii, angles = paths[0][3:]
        states[i] = np.column_stack([centres / size, radii / size, np.sin(angles), np.cos(angles)])
        for f in range(frames):
            canvas = np.empty((fine, fine, 3), np.float32)
            canvas[:] = background
            for shape, colour, scale, centres, radii, angles in reversed(paths):  # actor on top
                _draw(canvas, grid, shape, colour, centres[f], radii[f] * scale, angles[f])
            clips[i, f] = canvas.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean((1, 3))
        clips[i] += rng.normal(0.0, rng.uniform(0.0, noise) + 1e-12, clips[i].shape)
    np.clip(clips, 0.0, 1.0, out=clips)
    if channels == 1:
        clips = clips @ np.array([[0.299], [0.587], [0.114]], np.float32)
    return (clips, states) if return_states else clips


def synthetic_actions(n_per_class=40, *, classes=DEFAULT_MOTIONS, frames=8, size=32,
                      channels=3, noise=0.05, distractors=1, test_fraction=0.25, seed=0):
    """Short generated videos where the class is how a shape moves.

    Each clip shows one shape (a bar, a triangle or an L, in a random colour, size,
    position and orientation) moving left, right, up or down, rotating, growing or
    shrinking, plus ``distractors`` smaller static shapes, a small random jitter on every
    shape and Gaussian pixel noise of a random strength up to ``noise``. Translations
    cover 30-45% of the frame and rotations 45-90 degrees over the clip, whatever the
    number of frames. The same seed always gives the same clips and split.

    Args:
      n_per_class: int, default 40. Clips per class, before the train/test split.
      classes: sequence of str, default ``DEFAULT_MOTIONS`` (left, right, up, down, rotate,
        grow, shrink). Any of `MOTIONS`; label ``i`` is ``classes[i]``.
      frames: int, default 8. Frames per clip.
      size: int >= 8, default 32. Frame height and width in pixels.
      channels: 1 or 3, default 3. Grey or RGB frames.
      noise: float in [0, 1], default 0.05. Largest standard deviation of the pixel noise.
      distractors: int >= 0, default 1. Static shapes drawn behind the moving one.
      test_fraction: float in (0, 1), default 0.25. Stratified share of clips for testing.
      seed: int, default 0.

    Returns:
      A `SequenceDataset` with float32 ``x`` in [0, 1] of shape
      ``(n, frames, size, size, channels)``.

    Example:

    >>> data = tf_vib.datasets.synthetic_actions(20, frames=8, size=32)
    >>> data.x_train.shape
    (105, 8, 32, 32, 3)
    """
    n_per_class = check_int("n_per_class", n_per_class, minimum=2)
    classes = _check_motions(classes)
    test_fraction = check_fraction("test_fraction", test_fraction)
    seed = check_seed(seed)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    x = render_clips(labels, classes=classes, frames=frames, size=size, channels=channels,
                     noise=noise, distractors=distractors, seed=seed)
    train, test = stratified_indices(labels, test_fraction, seed=seed)
    return SequenceDataset(
        x[train],
        labels[train].astype(np.int64),
        x[test],
        labels[test].astype(np.int64),
        n_classes=len(classes),
        name="synthetic_actions",
        class_names=classes,
        info={"source": "synthetic", "seed": seed, "frames": frames, "size": size,
              "channels": channels, "noise": noise, "distractors": distractors,
              "test_fraction": test_fraction},
    )


_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


def write_videos(folder, *, n_per_class=2, classes=DEFAULT_MOTIONS, frames=8, size=32,
                 layout="ucf101", groups=2, extension=".avi", fps=8, seed=0):
    """Write generated clips as video files in one folder per class, for the folder loaders.

    Layouts (``<g>`` is the group, ``<c>`` the clip within it; clip ``i`` of a class goes
    to group ``i % groups + 1``):

    - "ucf101": ``folder/<class>/v_<class>_g<g>_c<c>.avi``
    - "ucf11": ``folder/<class>/v_<class>_<g>/v_<class>_<g>_<c>.avi`` (group subfolders)

    Args:
      folder: path. Created if missing.
      n_per_class: int, default 2. Clips per class.
      classes, frames, size, seed: as in `synthetic_actions` (RGB, default noise).
      layout: "ucf101" or "ucf11", default "ucf101".
      groups: int, default 2. Number of groups the clips of a class are spread over.
      extension: ".avi" (MJPG codec) or ".mp4" (mp4v codec), default ".avi".
      fps: int, default 8. Frame rate written in the file.

    Returns:
      The sorted list of written paths (`pathlib.Path`).

    Example:

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "clips"
    >>> len(write_videos(folder, n_per_class=3, classes=("left", "right")))
    6
    >>> tf_vib.datasets.video_folder(folder, frames=4, size=16).class_names
    ('left', 'right')
    """
    if not isinstance(folder, (str, pathlib.PurePath)):
        raise TypeError(f"`folder` must be a path; received {folder!r}")
    n_per_class = check_int("n_per_class", n_per_class)
    classes = _check_motions(classes)
    layout = check_choice("layout", layout, ("ucf101", "ucf11"))
    groups = check_int("groups", groups)
    extension = check_choice("extension", extension, tuple(_CODECS))
    fps = check_int("fps", fps)
    cv2 = require_module("cv2", purpose="write_videos()", package="opencv-python-headless")
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    clips = render_clips(labels, classes=classes, frames=frames, size=size, seed=seed)
    pixels = np.round(clips * 255.0).astype(np.uint8)[..., ::-1]  # OpenCV writes BGR
    paths = []
    for i, (label, clip) in enumerate(zip(labels, pixels, strict=True)):
        motion, index = classes[label], i % n_per_class
        group, number = index % groups + 1, index // groups + 1
        if layout == "ucf101":
            path = pathlib.Path(folder, motion, f"v_{motion}_g{group:02d}_c{number:02d}{extension}")
        else:
            stem = f"v_{motion}_{group:02d}"
            path = pathlib.Path(folder, motion, stem, f"{stem}_{number:02d}{extension}")
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*_CODECS[extension]), fps,
                                 (size, size))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV could not open a {_CODECS[extension]} writer for {path}")
        for frame in clip:
            writer.write(np.ascontiguousarray(frame))
        writer.release()
        paths.append(path)
    return sorted(paths)
