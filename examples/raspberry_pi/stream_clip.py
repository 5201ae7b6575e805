"""Run a streaming ``.tflite`` file frame by frame, as a camera loop does: NumPy and a runtime only.

A streaming file (``converters.to_tflite(model, streaming=True)``) takes one frame per
invoke and the recurrent layers' states as extra inputs, and gives them back as extra
outputs of the same names; this script feeds them back from zeros, frame after frame, and
prints the class after the clip and the time each frame took. It needs ``tflite_runner.py``
(next to it) and NumPy; OpenCV only for ``--video``, tf-vib only to render a clip itself::

    python stream_clip.py MODEL.tflite --video clip.mp4 [--frames 8]
    python stream_clip.py MODEL.tflite --clip clip.npy     # (steps, ...) frames or features
    python stream_clip.py MODEL.tflite                     # a generated clip

Without ``--video`` or ``--clip`` the clip is generated: one of tf-vib's synthetic action
clips (``tf_vib.datasets.render_clips``) when tf-vib is installed, else a bright square
moving right on a dark background (or random features for a features model).
"""

import argparse
import sys
import time

import numpy as np
from tflite_runner import RUNTIMES, load_interpreter


def video_frames(path, shape, count):
    """The first ``count`` frames of a video (as a camera gives them), resized to ``shape`` (H, W, C)."""
    try:
        import cv2
    except ImportError:
        raise SystemExit("--video needs OpenCV: pip install opencv-python-headless") from None
    capture = cv2.VideoCapture(path)
    height, width, channels = shape
    for _ in range(count):
        ok, frame = capture.read()
        if not ok:
            break
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB)
        yield frame.reshape(shape).astype(np.float32) / 255.0
    capture.release()


def generated_frames(shape, count, seed=0):
    """A generated clip: a synthetic action clip if tf-vib is here, else a square moving right."""
    if len(shape) != 3:  # a features model: nothing to render
        yield from np.random.default_rng(seed).normal(size=(count, *shape)).astype(np.float32)
        return
    try:
        from tf_vib.datasets import render_clips
    except ImportError:
        render_clips = None
    if render_clips is None or shape[0] != shape[1] or shape[0] < 8:
        height, width, _ = shape
        side = max(2, height // 4)
        for k in range(count):
            frame = np.full(shape, 0.1, np.float32)
            left = int(k * (width - side) / max(1, count - 1))
            frame[height // 2 - side // 2 : height // 2 + side // 2, left : left + side] = 0.9
            yield frame
        return
    clip = render_clips([0], frames=count, size=shape[0], channels=shape[2], seed=seed)[0]
    yield from clip


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run a streaming .tflite file frame by frame.")
    parser.add_argument("model", help="a streaming .tflite file")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--video", help="a video file (needs OpenCV)")
    source.add_argument("--clip", help="a .npy of frames (or per-frame features), shape (steps, ...)")
    parser.add_argument("--frames", type=int, default=8, help="frames to run (default 8; --clip: all)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--runtime", choices=list(RUNTIMES), default=None, help="force a runtime")
    parser.add_argument("--verbose", action="store_true", help="print the class after every frame")
    args = parser.parse_args(argv)
    model = load_interpreter(args.model, num_threads=args.threads, runtime=args.runtime)
    feeds = [name for name in model.input_names if name not in model.state_names]
    if not model.state_names or len(feeds) != 1:
        raise SystemExit(f"{args.model}: inputs {model.input_names}, outputs {model.output_names}: not a "
                         "streaming file with one frame input (converters.to_tflite(..., streaming=True))")
    shape = model.input_shapes[model.input_names.index(feeds[0])]
    if args.video:
        frames = video_frames(args.video, shape, args.frames)
    elif args.clip:
        frames = iter(np.load(args.clip).astype(np.float32))
    else:
        frames = generated_frames(shape, args.frames)
    print(f"runtime: {model.runtime}  frame {shape}  states "
          + ", ".join(f"{name} {model.input_shapes[model.input_names.index(name)]}" for name in model.state_names))
    states, times, scores = None, [], None
    for index, frame in enumerate(frames):
        if frame.shape != shape:
            raise SystemExit(f"frame {index} has shape {frame.shape}; the file takes {shape}")
        started = time.perf_counter()
        scores, states = model.step(frame[None], states)  # the camera loop: one invoke per frame
        times.append(time.perf_counter() - started)
        scores = scores[0] if isinstance(scores, list) else scores
        if args.verbose:
            print(f"frame {index}: class {int(scores[0].argmax())}")
    if scores is None:
        raise SystemExit("no frames were read")
    print(f"class after {len(times)} frames: {int(scores[0].argmax())}  (scores "
          + np.array2string(scores[0], precision=3) + ")")
    print(f"latency per frame: median {1e6 * float(np.median(times)):.1f} us, max {1e6 * max(times):.1f} us "
          f"({args.threads} thread(s), invoke with the states' copies in and out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
