"""The emulated Raspberry Pi the benchmarks count instructions on (``pi-run``), shared by
``cost_table.py`` and ``har_pipeline.py``.

``pi-run`` (``shared/tools/pi/pi-run`` beside the checkout, not part of the project) runs
TFLite files in an emulated arm64 Raspberry Pi userland on ai-edge-litert and
tflite-runtime 2.14 and prints the arm64 instructions of each invoke, which are repeatable
where emulated wall time is not. Nothing in the project needs it: a benchmark that finds
no ``pi-run`` says so and leaves the instruction counts out.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: pi-run's backend names -> the runtime names tf-vib uses.
RUNTIMES = {"tflite_runtime": "tflite-runtime-2.14", "ai_edge_litert": "ai-edge-litert"}


def find_pi_run():
    """The first ``shared/tools/pi/pi-run`` beside the checkout or one level up (a worktree),
    else ``pi-run`` on the PATH, else None."""
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / "shared" / "tools" / "pi" / "pi-run"
        if path.exists():
            return str(path)
    return shutil.which("pi-run")


def pi_counts(pi_run, paths, cpu="cortex-a72", ninv=3):
    """``{runtime: {file name: instructions of the last of ninv invokes}}`` from one pi-run;
    a file a runtime cannot load is missing from that runtime's entry."""
    env = {**os.environ, "CPU": cpu, "NINV": str(ninv)}
    text = subprocess.run([str(pi_run), *map(str, paths)], env=env, check=True, capture_output=True,
                          text=True).stdout
    counts = {}
    for section in text.split("=== emulated ")[1:]:
        backend = section.split(",", 1)[1].split()[0]
        loaded = [m.group(1) for m in re.finditer(r"^(\S+\.tflite): out#0", section, re.M)]
        numbers = json.loads(re.search(r"instructions per invoke \(loaded models, in order\): (\[.*\])",
                                       section).group(1))
        counts[RUNTIMES[backend]] = {name: numbers[ninv * i + ninv - 1] for i, name in enumerate(loaded)}
    return counts


def git_commit():
    """The checkout's short HEAD (the commit a result was made at), or "unknown"."""
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
