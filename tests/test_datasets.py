"""tf_vib.datasets: shapes, dtypes, splits, standardisation, padding, the video loaders on
small generated files, the feature cache and the tensorflow-datasets wrapper (faked)."""

import pathlib
import re
import shutil
import sys
import types

import numpy as np
import pytest

from tf_vib import datasets
from tf_vib._checks import BadArgument
from tf_vib._keras import keras
from tf_vib.datasets import features as features_module

TINY_CNN = {"backbone": "mobilenet_v2", "weights": None, "input_size": 32, "alpha": 0.35}


def _raw_japanese_vowels(split):
    from aeon.datasets import load_classification

    x, y = load_classification("JapaneseVowels", split=split)
    return [np.asarray(s, np.float64) for s in x], y


# ----------------------------------------------------------------------------- splits


def test_stratified_split_keeps_class_proportions_and_is_deterministic():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    x = np.arange(100)[:, None] * np.ones((1, 3))
    (x_a, y_a), (x_b, y_b) = datasets.stratified_split(x, y, 0.2, seed=3)
    assert len(y_b) == 20 and len(y_a) == 80
    assert np.bincount(y_b).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([x_a[:, 0], x_b[:, 0]]).tolist()) == list(range(100))
    (_, again), (x_b2, _) = datasets.stratified_split(x, y, 0.2, seed=3)
    np.testing.assert_array_equal(x_b, x_b2)
    (_, _), (x_b3, _) = datasets.stratified_split(x, y, 0.2, seed=4)
    assert not np.array_equal(x_b, x_b3)


def test_stratified_split_keeps_each_class_on_both_sides():
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    (_, y_a), (_, y_b) = datasets.stratified_split(np.zeros((10, 2)), y, 0.1)
    assert set(y_a) == set(y_b) == {0, 1}


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, "0.2", True])
def test_stratified_split_rejects_bad_fractions(fraction):
    with pytest.raises((ValueError, TypeError), match="`fraction` must be a float in"):
        datasets.stratified_split(np.zeros((10, 2)), np.arange(10) % 2, fraction)


def test_stratified_split_rejects_bad_labels():
    with pytest.raises(ValueError, match="same number of examples"):
        datasets.stratified_split(np.zeros((9, 2)), np.arange(10) % 2, 0.2)
    with pytest.raises(ValueError, match=r"classes \[2\] have only 1"):
        datasets.stratified_split(np.zeros((5, 2)), np.array([0, 0, 1, 1, 2]), 0.4)


# ----------------------------------------------------------------------------- digits


def test_digits_rows_shapes_range_and_split():
    data = datasets.digits_rows()
    assert data.x_train.shape == (1348, 8, 8) and data.x_test.shape == (449, 8, 8)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() == 1.0
    assert data.n_classes == 10 and data.class_names[3] == "3"
    np.testing.assert_allclose(np.bincount(data.y_test) / len(data.y_test),
                               np.bincount(data.y_train) / len(data.y_train), atol=0.01)
    from sklearn.datasets import load_digits

    rows = {image.tobytes() for image in (load_digits().images / 16.0).astype(np.float32)}
    assert all(x.tobytes() in rows for x in data.x_test)  # step t is pixel row t
    again = datasets.digits_rows()
    np.testing.assert_array_equal(again.x_test, data.x_test)
    (x_tr, _), (x_val, y_val) = data.split_validation(0.2, seed=0)
    assert len(x_val) == round(0.2 * 1348) and set(y_val) == set(range(10))


def test_digits_rows_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`test_fraction` must be a float in"):
        datasets.digits_rows(1.0)
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer; received -1"):
        datasets.digits_rows(seed=-1)
    with pytest.raises(TypeError, match="`seed` must be a non-negative integer; received 0.5"):
        datasets.digits_rows(seed=0.5)


# ----------------------------------------------------------------------------- padding


def test_pad_sequences_pads_and_truncates_on_the_chosen_side():
    a, b = np.arange(6.0).reshape(3, 2), np.arange(10.0, 20.0).reshape(5, 2)
    post = datasets.pad_sequences([a, b])
    assert post.shape == (2, 5, 2) and post.dtype == np.float32
    np.testing.assert_array_equal(post[0], np.vstack([a, np.zeros((2, 2))]))
    np.testing.assert_array_equal(post[1], b)
    pre = datasets.pad_sequences([a, b], length=4, padding="pre", value=-1.0)
    np.testing.assert_array_equal(pre[0], np.vstack([[[-1.0, -1.0]], a]))
    np.testing.assert_array_equal(pre[1], b[1:])  # "pre" keeps the last steps
    np.testing.assert_array_equal(datasets.pad_sequences([a, b], length=4)[1], b[:4])


def test_pad_sequences_of_token_ids_give_a_2d_integer_array():
    ids = datasets.pad_sequences([np.array([3, 1]), np.array([5, 2, 7])], dtype="int32")
    assert ids.dtype == np.int32
    assert ids.tolist() == [[3, 1, 0], [5, 2, 7]]


@pytest.mark.parametrize("kwargs,match", [
    ({"sequences": []}, r"`sequences` must be a non-empty list of arrays; received list \(empty\)"),
    ({"sequences": [np.zeros((3, 2)), np.zeros((4, 3))]},
     r"must all be \(time, features\) arrays with the same features.*received shapes \[\(3, 2\), \(4, 3\)\]"),
    ({"padding": "middle"}, r"`padding` must be one of 'post', 'pre'; received 'middle'"),
    ({"length": 0}, r"`length` must be an integer >= 1; received 0"),
    ({"dtype": "int32", "value": 0.5}, r"`value` must be an integer \(dtype int32\); received 0.5"),
    ({"dtype": "str"}, r"`dtype` must be a numeric NumPy dtype .*received 'str'"),
])
def test_pad_sequences_rejects_bad_arguments(kwargs, match):
    args = {"sequences": [np.zeros((3, 2)), np.zeros((4, 2))], **kwargs}
    with pytest.raises(ValueError, match=match):
        datasets.pad_sequences(args.pop("sequences"), **args)


# ----------------------------------------------------------------------------- UEA


@pytest.fixture(scope="module")
def vowels():
    return datasets.uea("JapaneseVowels")


def test_uea_japanese_vowels_shapes_and_labels(vowels):
    assert vowels.x_train.shape == (270, 26, 12) and vowels.x_test.shape == (370, 26, 12)
    assert vowels.x_train.dtype == np.float32 and vowels.y_test.dtype == np.int64
    assert vowels.n_classes == 9 and vowels.class_names == tuple("123456789")
    assert set(vowels.y_train) == set(vowels.y_test) == set(range(9))
    _, raw_labels = _raw_japanese_vowels("train")
    np.testing.assert_array_equal(vowels.y_train, raw_labels.astype(int) - 1)
    assert vowels.info["lengths_train"].min() == 7 and vowels.info["n_truncated_test"] == 1


def test_uea_pads_at_the_front(vowels):
    lengths = vowels.info["lengths_train"]
    assert vowels.info["padding"] == "pre"
    for x, length in zip(vowels.x_train, lengths, strict=True):
        assert not x[: 26 - length].any()  # padding first
        assert np.abs(x[26 - length :]).sum(axis=1).min() > 0  # then only real steps
    assert np.all(np.abs(vowels.x_train[:, -1]).sum(axis=1) > 0)  # last step always real


def test_uea_standardises_with_training_statistics_only(vowels):
    raw_train, _ = _raw_japanese_vowels("train")
    raw_test, _ = _raw_japanese_vowels("test")
    steps = np.concatenate(raw_train, axis=1)
    mean, std = steps.mean(axis=1), steps.std(axis=1)
    np.testing.assert_allclose(vowels.info["mean"], mean, rtol=1e-6)
    real = np.concatenate([x[26 - n :] for x, n in zip(vowels.x_train, vowels.info["lengths_train"],
                                                        strict=True)])
    np.testing.assert_allclose(real.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(real.std(axis=0), 1.0, atol=1e-4)
    # The test set is transformed with the training statistics, not its own.
    series = raw_test[0]
    expected = ((series - mean[:, None]) / std[:, None]).T[-26:]
    np.testing.assert_allclose(vowels.x_test[0, 26 - len(expected) :], expected, atol=1e-5)
    test_real = np.concatenate([(s - mean[:, None]) / std[:, None] for s in raw_test], axis=1)
    assert np.abs(test_real.mean(axis=1)).max() > 0.01  # its own stats would give 0


def test_uea_truncates_long_series_at_the_front(vowels):
    short = datasets.uea("JapaneseVowels", max_length=10)
    assert short.x_train.shape == (270, 10, 12)
    np.testing.assert_array_equal(short.x_train, vowels.x_train[:, -10:])
    assert short.info["n_truncated_train"] == int((vowels.info["lengths_train"] > 10).sum())
    longer = datasets.uea("JapaneseVowels", max_length=30)
    np.testing.assert_array_equal(longer.x_train[:, -26:], vowels.x_train)
    assert not longer.x_train[:, :4].any()
    longest = int(np.argmax(vowels.info["lengths_test"]))  # 29 steps: its first 3 dropped
    assert not longer.x_test[longest, 0].any() and longer.x_test[longest, 1:4].any()
    np.testing.assert_array_equal(longer.x_test[longest, -26:], vowels.x_test[longest])


def test_uea_reads_a_data_dir(tmp_path, vowels):
    from aeon import datasets as aeon_datasets

    source = pathlib.Path(aeon_datasets.__file__).parent / "data" / "JapaneseVowels"
    shutil.copytree(source, tmp_path / "JapaneseVowels")
    assert datasets.uea_names(tmp_path) == ["JapaneseVowels"]
    copied = datasets.uea("JapaneseVowels", data_dir=tmp_path)
    np.testing.assert_array_equal(copied.x_test, vowels.x_test)


def test_uea_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="received 'NoSuchSet'.*JapaneseVowels.*never downloads"):
        datasets.uea("NoSuchSet")
    with pytest.raises(ValueError, match="received 'Covid3Month'"):  # a regression set
        datasets.uea("Covid3Month")
    with pytest.raises(ValueError, match="`max_length` must be an integer >= 1; received 0"):
        datasets.uea("JapaneseVowels", max_length=0)
    with pytest.raises(FileNotFoundError, match="`data_dir` must be an existing folder"):
        datasets.uea("JapaneseVowels", data_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="in data_dir=.*Available: none"):
        datasets.uea("JapaneseVowels", data_dir=tmp_path)


def test_sequence_dataset_checks_its_arrays():
    x = np.zeros((4, 3, 2), np.float32)
    with pytest.raises(ValueError, match="`y_train` must be a NumPy array of shape \\(4,\\)"):
        datasets.SequenceDataset(x, np.zeros(3, np.int64), x, np.zeros(4, np.int64), 2, "t",
                                 ("a", "b"))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        datasets.SequenceDataset(x, np.full(4, 2), x, np.zeros(4, np.int64), 2, "t", ("a", "b"))
    data = datasets.SequenceDataset(x, np.zeros(4, np.int64), x, np.zeros(4, np.int64), 2, "t",
                                    ("a", "b"))
    assert data.input_shape == (3, 2) and "x_train=(4, 3, 2)" in repr(data)


def test_load_dispatches_by_name():
    assert datasets.load("JapaneseVowels").x_train.shape == (270, 26, 12)
    assert datasets.load("digits_rows", 0.5).x_test.shape == (898, 8, 8)
    with pytest.raises(ValueError, match="synthetic_actions.*JapaneseVowels.*received 'nope'"):
        datasets.load("nope")


def test_tfrecord_shards_give_back_the_rows_in_order_from_chunks(tmp_path, rng):
    x, y = rng.normal(size=(7, 4, 3)).astype("float32"), rng.integers(0, 5, 7)
    chunks = ((x[a:b], y[a:b]) for a, b in ((0, 3), (3, 5)))  # a generator: rows 0-4 in two chunks
    paths = [datasets.write_tfrecord(tmp_path / "a.tfrecord", chunks),
             datasets.write_tfrecord(str(tmp_path / "b.tfrecord"), [(x[5:], y[5:])])]
    batches = list(datasets.read_tfrecords(paths, (4, 3), batch_size=2).as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [2, 2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


@pytest.mark.parametrize("call, match", [
    (lambda p: datasets.write_tfrecord(3, []), r"`path` must be a file path .*received 3"),
    (lambda p: datasets.write_tfrecord(p, [np.zeros((2, 3))]), r"`batches\[0\]` must be a pair \(x, y\)"),
    (lambda p: datasets.write_tfrecord(p, [(np.zeros((2, 3)), np.zeros(2))]),
     r"`batches\[0\]`'s y must be 2 integer class indices.*dtype float64"),
    (lambda p: datasets.read_tfrecords(p, (4, 3)), r"`paths` must be a list of file paths"),
    (lambda p: datasets.read_tfrecords([p], (4, 0)), r"`sample_shape` must be a tuple of integers >= 1"),
    (lambda p: datasets.read_tfrecords([p], (4, 3), batch_size=0), r"`batch_size` must be an integer >= 1"),
])
def test_tfrecord_helpers_reject_bad_arguments(tmp_path, call, match):
    with pytest.raises(BadArgument, match=match):
        call(str(tmp_path / "x.tfrecord"))


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_actions_shapes_and_determinism():
    data = datasets.synthetic_actions(8, frames=6, size=16, seed=1)
    assert data.x_train.shape == (42, 6, 16, 16, 3) and data.x_test.shape == (14, 6, 16, 16, 3)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.class_names == datasets.DEFAULT_MOTIONS
    assert np.bincount(data.y_test).tolist() == [2] * 7
    again = datasets.synthetic_actions(8, frames=6, size=16, seed=1)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    other = datasets.synthetic_actions(8, frames=6, size=16, seed=2)
    assert not np.array_equal(other.x_train, data.x_train)
    grey = datasets.synthetic_actions(4, classes=("left", "still"), size=12, channels=1)
    assert grey.x_train.shape[1:] == (8, 12, 12, 1) and grey.n_classes == 2


def _actor_track(clip):
    """Centroids (row, col) and areas of the bright actor in each frame of a clean clip, and
    the overlap (IoU) of its first and last masks once their centroids are aligned."""
    mask = clip.max(axis=-1) > 0.5
    rows, cols = np.indices(mask.shape[1:])
    area = mask.sum(axis=(1, 2))
    centre = np.stack([(mask * rows).sum((1, 2)) / area, (mask * cols).sum((1, 2)) / area], 1)
    shift = tuple(np.round(centre[0] - centre[-1]).astype(int))
    last = np.roll(mask[-1], shift, axis=(0, 1))
    return centre, area, (mask[0] & last).sum() / (mask[0] | last).sum()


@pytest.mark.parametrize(
    "motion, check",
    [
        ("left", lambda c, a, o: c[-1, 1] < c[0, 1] - 6),
        ("right", lambda c, a, o: c[-1, 1] > c[0, 1] + 6),
        ("up", lambda c, a, o: c[-1, 0] < c[0, 0] - 6),
        ("down", lambda c, a, o: c[-1, 0] > c[0, 0] + 6),
        ("grow", lambda c, a, o: a[-1] > 2 * a[0]),
        ("shrink", lambda c, a, o: a[-1] < a[0] / 2),
        ("rotate", lambda c, a, o: np.abs(c[-1] - c[0]).max() < 6 and o < 0.6),
        ("still", lambda c, a, o: np.abs(c[-1] - c[0]).max() < 3 and o > 0.6),
    ],
)
def test_synthetic_motions_move_as_named(motion, check):
    labels = np.full(5, datasets.MOTIONS.index(motion))
    clips = datasets.render_clips(labels, classes=datasets.MOTIONS, size=32, noise=0.0,
                                  distractors=0, seed=0)
    for clip in clips:
        assert check(*_actor_track(clip))


@pytest.mark.parametrize("motion", ["left", "right", "up", "down", "grow", "rotate"])
def test_render_clips_states_follow_the_drawn_shape(motion):
    labels = np.full(4, datasets.MOTIONS.index(motion))
    kwargs = dict(classes=datasets.MOTIONS, size=48, noise=0.0, distractors=0, seed=3)
    clips, states = datasets.render_clips(labels, return_states=True, **kwargs)
    assert states.shape == (4, 8, len(datasets.STATE_NAMES))
    np.testing.assert_array_equal(clips, datasets.render_clips(labels, **kwargs))
    for clip, state in zip(clips, states, strict=True):
        centre, area, _ = _actor_track(clip)
        moved = 48 * (state[-1, :2] - state[0, :2])
        if motion != "rotate":  # a turning shape's centroid circles its centre
            np.testing.assert_allclose(centre[-1] - centre[0], moved, atol=1.5)
        assert area[-1] / area[0] == pytest.approx((state[-1, 2] / state[0, 2]) ** 2, rel=0.2)
        np.testing.assert_allclose(state[:, 3] ** 2 + state[:, 4] ** 2, 1.0, atol=1e-5)
        turned = np.abs(np.diff(np.unwrap(np.arctan2(state[:, 3], state[:, 4])))).sum()
        assert (turned > 0.5) == (motion == "rotate")
    with pytest.raises(TypeError, match="`return_states` must be True or False; received 1"):
        datasets.render_clips(labels, return_states=1)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"classes": ("left", "jump")}, "`classes` must be one of 'left'"),
        ({"classes": ("left", "left")}, "must not repeat"),
        ({"classes": "left"}, "at least 2 motions"),
        ({"n_per_class": 1}, "`n_per_class` must be an integer >= 2; received 1"),
        ({"size": 4}, "`size` must be an integer >= 8; received 4"),
        ({"channels": 2}, "`channels` must be one of 1, 3; received 2"),
        ({"noise": 2}, r"`noise` must be a finite number >= 0 and <= 1; received 2"),
        ({"test_fraction": 0}, "`test_fraction` must be a float in"),
    ],
)
def test_synthetic_actions_rejects_bad_arguments(kwargs, error):
    with pytest.raises((ValueError, TypeError), match=error):
        datasets.synthetic_actions(**{"n_per_class": 4, **kwargs})


# ----------------------------------------------------------------------------- video files

CLASSES = ("left", "right", "grow")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos") / "clips"
    paths = datasets.write_videos(root, n_per_class=4, classes=CLASSES, frames=10, size=24,
                                  groups=2)
    assert len(paths) == 12 and all(p.suffix == ".avi" for p in paths)
    return root


def test_sample_indices_spread_and_repeat():
    assert datasets.sample_indices(10, 3).tolist() == [1, 5, 8]
    assert datasets.sample_indices(2, 5).tolist() == [0, 0, 1, 1, 1]


def test_read_clip_returns_the_written_frames(clip_folder):
    path = clip_folder / "left" / "v_left_g01_c01.avi"
    written = datasets.render_clips(np.repeat(np.arange(3), 4), classes=CLASSES, frames=10,
                                    size=24)[0]
    clip = datasets.read_clip(path, frames=5, size=24)
    assert clip.shape == (5, 24, 24, 3) and clip.dtype == np.float32
    assert np.abs(clip - written[datasets.sample_indices(10, 5)]).mean() < 0.05  # JPEG loss
    small = datasets.read_clip(path, frames=3, size=(8, 12), channels=1, dtype="uint8")
    assert small.shape == (3, 8, 12, 1) and small.dtype == np.uint8


def test_video_folder_loads_and_splits(clip_folder):
    data = datasets.video_folder(clip_folder, frames=4, size=16)
    assert data.class_names == ("grow", "left", "right")  # sorted folder names
    assert data.x_train.shape == (9, 4, 16, 16, 3) and data.x_test.shape == (3, 4, 16, 16, 3)
    assert data.info["split"] == "stratified" and sorted(data.y_test.tolist()) == [0, 1, 2]
    assert not set(data.info["files_train"]) & set(data.info["files_test"])
    again = datasets.video_folder(clip_folder, frames=4, size=16)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    few = datasets.video_folder(clip_folder, frames=2, size=8, classes=["left", "right"],
                                max_per_class=2, test_fraction=0.5, dtype="uint8")
    assert few.x_train.shape == (2, 2, 8, 8, 3) and few.x_train.dtype == np.uint8
    assert few.class_names == ("left", "right")


def test_ucf101_holds_out_whole_groups_or_uses_official_lists(clip_folder, tmp_path):
    data = datasets.ucf101(clip_folder, frames=2, size=8, test_fraction=0.5, seed=0)
    assert data.info["split"].startswith("groups")
    groups = {name: {re.search(r"_g(\d+)_c", p).group(1) for p in data.info[f"files_{name}"]}
              for name in ("train", "test")}
    assert len(groups["test"]) == 1 and not groups["train"] & groups["test"]

    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text(
        "left/v_left_g01_c01.avi 2\nright/v_right_g01_c01.avi 3\nGrow/v_Grow_g01_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("left/v_left_g02_c01.avi\nright/v_right_g02_c02.avi\n")
    official = datasets.ucf101(clip_folder, frames=2, size=8, splits_dir=lists)
    assert official.info["split"] == "official" and official.info["left_out"] == 7
    assert len(official.y_train) == 3 and len(official.y_test) == 2  # names match any case


def test_ucf11_reads_group_subfolders(tmp_path):
    datasets.write_videos(tmp_path, n_per_class=4, classes=("up", "down"), layout="ucf11",
                          frames=4, size=16, groups=4)
    assert (tmp_path / "up" / "v_up_03" / "v_up_03_01.avi").is_file()
    data = datasets.ucf11(tmp_path, frames=2, size=8)
    assert data.name == "ucf11" and data.n_classes == 2 and len(data.y_test) == 2
    assert all("_01/" in f or "_02/" in f or "_03/" in f or "_04/" in f
               for f in data.info["files_test"])


def test_hmdb51_uses_official_split_files(tmp_path):
    datasets.write_videos(tmp_path, n_per_class=4, classes=CLASSES, frames=4, size=16)
    splits = tmp_path / "testTrainMulti_7030_splits"  # inside root: not taken for a class
    splits.mkdir()
    for name in CLASSES:
        lines = [f"v_{name}_g01_c01.avi 1", f"v_{name}_g01_c02.avi 1", f"v_{name}_g02_c01.avi 2",
                 f"v_{name}_g02_c02.avi 0"]
        (splits / f"{name}_test_split1.txt").write_text("\n".join(lines) + "\n")
    data = datasets.hmdb51(tmp_path, frames=2, size=8)
    assert data.info["split"] == "official" and data.info["left_out"] == 3
    assert len(data.y_train) == 6 and len(data.y_test) == 3 and data.n_classes == 3
    fallback = datasets.hmdb51(tmp_path, frames=2, size=8, split_number=2)
    assert fallback.info["split"] == "stratified"


def test_video_folder_skips_unreadable_files(tmp_path):
    datasets.write_videos(tmp_path, n_per_class=3, classes=("left", "right"), frames=4, size=16)
    (tmp_path / "left" / "broken.avi").write_bytes(b"not a video")
    with pytest.warns(UserWarning, match="could not decode"):
        data = datasets.video_folder(tmp_path, frames=2, size=8, test_fraction=0.3)
    assert data.info["unreadable"][0].endswith("broken.avi")
    assert len(data.y_train) + len(data.y_test) == 6


def test_video_loaders_reject_bad_arguments(clip_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="`root` must be an existing folder"):
        datasets.video_folder(tmp_path / "missing")
    (tmp_path / "walk").mkdir()
    (tmp_path / "walk" / "notes.txt").write_text("no videos here")
    with pytest.raises(ValueError, match="has no video files"):
        datasets.video_folder(tmp_path)
    with pytest.raises(ValueError, match=r"\['jump'\] are not among the folders"):
        datasets.video_folder(clip_folder, classes=["left", "jump"])
    with pytest.raises(ValueError, match="`size` must be an integer >= 1 or a pair"):
        datasets.video_folder(clip_folder, size=(8,))
    with pytest.raises(ValueError, match="`dtype` must be one of 'float32', 'uint8'"):
        datasets.video_folder(clip_folder, dtype="float16")
    with pytest.raises(TypeError, match="`frames` must be an integer >= 1; received 2.0"):
        datasets.read_clip(clip_folder / "left" / "v_left_g01_c01.avi", frames=2.0)
    with pytest.raises(FileNotFoundError, match="`path` must be an existing video file"):
        datasets.read_clip(tmp_path / "none.avi")
    with pytest.raises(ValueError, match="`split_number` must be one of 1, 2, 3; received 4"):
        datasets.ucf101(clip_folder, split_number=4)
    with pytest.raises(ValueError, match="`extensions` must be a tuple of suffixes"):
        datasets.video_folder(clip_folder, extensions=".avi")
    with pytest.raises(ValueError, match="`split` must be None or a pair"):
        datasets.video_folder(clip_folder, split=(["a.avi"], "b.avi"))
    with pytest.raises(ValueError, match="`layout` must be one of 'ucf101', 'ucf11'"):
        datasets.write_videos(tmp_path, layout="kinetics")


def test_missing_opencv_names_the_extra(clip_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"opencv-python-headless.*tf-vib\[datasets\]"):
        datasets.read_clip(clip_folder / "left" / "v_left_g01_c01.avi")


# ----------------------------------------------------------------------------- tfds (faked)


def _fake_tfds(calls, *, prepared=True):
    rng = np.random.default_rng(0)

    def example(label, length):
        return {"video": rng.integers(0, 255, (length, 20, 24, 3), dtype=np.uint8),
                "label": np.int64(label)}

    splits = {"train": [example(i % 3, 12) for i in range(6)],
              "test": [example(i % 3, 5) for i in range(3)]}

    def load(name, *, split, data_dir, download, with_info):
        calls.append({"name": name, "split": split, "data_dir": data_dir, "download": download})
        if not prepared:
            raise AssertionError(f"Dataset {name}: could not find data in {data_dir}.")
        label = types.SimpleNamespace(names=["ApplyEyeMakeup", "Archery", "Biking"])
        info = types.SimpleNamespace(features={"label": label})
        return [splits[s] for s in split], info

    return types.SimpleNamespace(load=load, as_numpy=iter)


def test_ucf101_tfds_reads_prepared_data_without_downloading(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds(calls))
    data = datasets.ucf101_tfds(frames=4, size=8, max_per_class=1)
    assert calls == [{"name": "ucf101/ucf101_1_256", "split": ["train", "test"],
                      "data_dir": None, "download": False}]
    assert data.x_train.shape == (3, 4, 8, 8, 3) and data.x_test.shape == (3, 4, 8, 8, 3)
    assert data.class_names == ("ApplyEyeMakeup", "Archery", "Biking")
    assert data.y_train.tolist() == [0, 1, 2] and data.x_train.dtype == np.float32


def test_ucf101_tfds_errors(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", _fake_tfds([], prepared=False))
    with pytest.raises(FileNotFoundError, match="no prepared 'ucf101/ucf101_2'.*never downloads"):
        datasets.ucf101_tfds(config="ucf101_2")
    with pytest.raises(ValueError, match="`config` must be one of 'ucf101_1_256'"):
        datasets.ucf101_tfds(config="ucf101_9")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="tensorflow-datasets"):
        datasets.ucf101_tfds()


# ----------------------------------------------------------------------------- CNN features


@pytest.mark.parametrize("backbone, module", [("inception_v3", "inception_v3"),
                                              ("mobilenet_v2", "mobilenet_v2"),
                                              ("efficientnet_b0", "efficientnet")])
def test_extractor_preprocessing_matches_preprocess_input(backbone, module):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    expected = getattr(keras.applications, module).preprocess_input(pixels.copy())
    rescale = features_module._BACKBONES[backbone].rescale
    ours = pixels if rescale is None else keras.layers.Rescaling(*rescale)(pixels).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


def test_random_extractor_is_seeded_and_keeps_a_usable_scale():
    first = datasets.build_extractor(**TINY_CNN)
    second = datasets.build_extractor(**TINY_CNN)
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    out = first.predict(images, verbose=0)
    assert first.output_shape == (None, 1280)
    np.testing.assert_allclose(second.predict(images, verbose=0), out, rtol=1e-5, atol=1e-5)
    assert out.std() > 1e-2  # not the ~1e-10 of uncalibrated batch norm


def test_inception_v3_gives_2048_features_on_small_frames():
    extractor = datasets.build_extractor("inception_v3", weights=None, input_size=75)
    assert extractor.output_shape == (None, 2048)


def test_cnn_features_shapes_cache_and_pixel_scales(tmp_path, monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 2, 20, 20, 3), dtype=np.uint8)
    first = datasets.cnn_features(pixels, cache=tmp_path, **TINY_CNN)
    assert first.shape == (3, 2, 1280) and first.dtype == np.float32
    assert len(list(tmp_path.glob("mobilenet_v2-random-32x32-*.npy"))) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(features_module, "build_extractor", no_build)
    np.testing.assert_array_equal(datasets.cnn_features(pixels, cache=tmp_path, **TINY_CNN), first)
    monkeypatch.undo()
    scaled = datasets.cnn_features(pixels.astype(np.float32) / 255.0, cache=tmp_path, **TINY_CNN)
    np.testing.assert_allclose(scaled, first, rtol=1e-4, atol=1e-4)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # a different array is a different key


def test_extract_features_turns_clips_into_sequences():
    clips = datasets.synthetic_actions(2, classes=("left", "grow"), frames=3, size=32)
    data = datasets.extract_features(clips, batch_size=4, **TINY_CNN)
    assert data.x_train.shape == (2, 3, 1280) and data.x_test.shape == (2, 3, 1280)
    np.testing.assert_array_equal(data.y_test, clips.y_test)
    assert data.info["features"]["feature_dim"] == 1280 and data.info["source"] == "synthetic"


def test_imagenet_weights_are_never_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".keras").mkdir()
    expected = tmp_path / ".keras" / "models" / "efficientnetb0_notop.h5"
    assert datasets.weights_path("efficientnet_b0") == expected
    with pytest.raises(FileNotFoundError, match="not in the Keras cache.*weights=None"):
        datasets.build_extractor("efficientnet_b0", weights="imagenet")
    name = datasets.weights_path("mobilenet_v2", input_size=100, alpha=0.35).name
    assert name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"backbone": "resnet50"}, "`backbone` must be one of 'inception_v3'"),
        ({"backbone": "inception_v3", "input_size": 32}, "`input_size` must be an integer >= 75"),
        ({"backbone": "inception_v3", "alpha": 0.5}, "applies to backbone='mobilenet_v2'"),
        ({"backbone": "mobilenet_v2", "alpha": 0.3}, r"`alpha` must be one of \(0.35"),
        ({"weights": "weights.h5"}, '`weights` must be "imagenet", None'),
    ],
)
def test_extractor_rejects_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        datasets.build_extractor(**kwargs)


def test_cnn_features_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="`frames` must be a NumPy array of shape"):
        datasets.cnn_features(np.zeros((2, 8, 8, 3)), **TINY_CNN)
    with pytest.raises(ValueError, match="uint8 .* or float"):
        datasets.cnn_features(np.zeros((1, 1, 8, 8, 3), np.int32), **TINY_CNN)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="`cache` must be None or a folder"):
        datasets.cnn_features(np.zeros((1, 1, 8, 8, 3)), cache=tmp_path / "file", **TINY_CNN)
