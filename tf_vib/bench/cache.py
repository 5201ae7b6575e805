"""One cached result per (data set, seed, method, sweep point), stamped with commit and settings.

A result is reused when its settings are the same and the code it ran is the same: the
code digest covers tf_vib and converters without docstrings and comments, and without the
report's own modules (rewriting the report reruns nothing). ``keep_stale`` reuses results of
older code too; the report says which commit each row comes from.
"""

import ast
import hashlib
import json
import pathlib
import re
import subprocess

__all__ = ["Cache", "digest", "code_digest", "commit"]

#: Bumped when a cached record's layout changes.
FORMAT = 1
#: Modules that only read the results: a change to them reruns nothing.
_REPORT_ONLY = {"report.py", "floor.py", "aggregate.py", "choice.py", "cache.py"}


def digest(value):
    """A short SHA-256 of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _code(path):
    """The module's code without docstrings and comments (``ast.dump``)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_digest():
    """A digest of the code the benchmark runs (tf_vib and converters, report modules aside)."""
    import converters
    import tf_vib

    sha = hashlib.sha256()
    for package in (tf_vib, converters):
        root = pathlib.Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            if path.parent.name == "bench" and path.name in _REPORT_ONLY:
                continue
            sha.update(str(path.relative_to(root.parent)).encode())
            sha.update(_code(path).encode())
    return sha.hexdigest()[:16]


def commit():
    """The git commit of the tf_vib source (``+dirty`` with uncommitted changes), or its version."""
    import tf_vib

    root = pathlib.Path(tf_vib.__file__).parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"tf-vib {tf_vib.__version__}"
    return head + ("+dirty" if dirty else "")


def _slug(name):
    return re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")


class Cache:
    """Results under ``folder/cache/<data set>/seed<k>/``: ``<name>-<key>.json`` (and ``.keras``)."""

    def __init__(self, folder, *, keep_stale=False):
        self.folder = pathlib.Path(folder) / "cache"
        self.keep_stale = keep_stale
        self.code, self.commit = code_digest(), commit()

    def _path(self, dataset, seed, name, settings):
        return self.folder / dataset / f"seed{seed}" / f"{_slug(name)}-{digest([FORMAT, settings])}.json"

    def get(self, dataset, seed, name, settings):
        """The cached record of these settings, or None (absent, or run by other code)."""
        path = self._path(dataset, seed, name, settings)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        if record["stamp"]["settings"] != json.loads(json.dumps(settings, default=str)):
            return None
        if record["stamp"]["code"] != self.code and not self.keep_stale:
            return None
        return record

    def put(self, dataset, seed, name, settings, record, model=None):
        """Save ``record`` stamped with the commit, the code digest and ``settings``; return it."""
        path = self._path(dataset, seed, name, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {**record, "stamp": {"commit": self.commit, "code": self.code, "settings": settings,
                                      "key": path.stem}}
        if model is not None:
            model.save(path.with_suffix(".keras"))
        path.write_text(json.dumps(record, indent=1, default=str))
        return json.loads(path.read_text())

    def model(self, dataset, seed, name, settings):
        """The Keras model saved with the record (uncompiled)."""
        from tf_vib._keras import keras

        return keras.models.load_model(self._path(dataset, seed, name, settings).with_suffix(".keras"),
                                       compile=False)
