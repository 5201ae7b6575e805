"""The conversion's child process, seen from the parent: run it, and read how it ended.

`run_child` starts ``python -m converters._worker`` on a folder of jobs (written by
`converters.tflite`) and waits for it. A job the child wrote no result for is the one it
died in: a signal becomes `ConversionCrash` (naming the layers and the mode, with a hint
for the crashes known to TFLite), any other non-zero exit a `ConversionError` with the
converter's last lines of output.
"""

import os
import pathlib
import re
import signal
import subprocess
import sys

__all__ = ["ConversionCrash", "ConversionError", "run_child", "summarize_error"]


class ConversionError(RuntimeError):
    """The model could not be converted; the message says why and what to change."""


class ConversionCrash(ConversionError):
    """TFLite crashed (e.g. a segfault) in the child process that converted the model."""

    def __init__(self, message, *, signal_name, quantization, layers):
        super().__init__(message)
        self.signal_name = signal_name
        self.quantization = quantization
        self.layers = layers


def summarize_error(message, limit=6):
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return "\n  ".join((errors or lines)[:limit])


_NOISE = re.compile(r"^(I\d{4} |WARNING: All log messages|E\d{4} .*(cuda|CUDA))")


def _log_tail(log, lines=8):
    """The converter's last lines of output, without TensorFlow's start-up chatter."""
    kept = [line for line in log.strip().splitlines() if line.strip() and not _NOISE.match(line)]
    return "\n    ".join(kept[-lines:])


def _crash_error(job, returncode, log):
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    recurrent = [p for p in job.plans if p.kind != "SelectFeatures" and "BatchNormalization" not in p.kind]
    loops = [p for p in recurrent if "WHILE" in p.becomes]
    hint = ""
    if job.quantization == "int8" and loops:
        hint = (" Full-int8 conversion of WHILE loops is known to crash TFLite (TF 2.21): "
                f"{', '.join(str(p) for p in loops)}. Use recurrent_plan='auto' (unrolls them) "
                "or a float mode.")
    tail = _log_tail(log)
    plans = "; ".join(str(p) for p in recurrent) or "none"
    return ConversionCrash(
        f"TFLite crashed ({name}) converting model {job.model.name!r} ({job.describe_layers()}) to "
        f"{job.mode_text()}. It ran in a child process, so this process is unaffected. "
        f"Recurrent layers: {plans}.{hint}" + (f"\n  last converter output:\n    {tail}" if tail else ""),
        signal_name=name, quantization=job.quantization, layers=[p.kind for p in recurrent],
    )


def run_child(directory, jobs, timeout):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    names = [job.name for job in jobs]
    log_path = directory / "worker.log"
    with open(log_path, "w") as log:
        try:
            process = subprocess.run(
                [sys.executable, "-m", "converters._worker", str(directory), *names],
                stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise ConversionError(
                f"TFLite conversion of {names} did not finish within timeout={timeout} s"
            ) from error
    done = [n for n in names if (directory / f"{n}.json").exists() or (directory / f"{n}.error.json").exists()]
    if process.returncode == 0 and len(done) == len(names):
        return
    # the first job without a result is the one the child died in; if every job has one,
    # the child failed after its work (at exit): name the last job
    failed = next((n for n in names if n not in done), names[-1])
    job = next(j for j in jobs if j.name == failed)
    if process.returncode < 0:
        raise _crash_error(job, process.returncode, log_path.read_text(errors="replace"))
    raise ConversionError(
        f"the TFLite converter process for {job.mode_text()} exited with code "
        f"{process.returncode}:\n  {summarize_error(log_path.read_text(errors='replace'))}"
    )
