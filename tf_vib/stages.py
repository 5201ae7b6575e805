"""Deprecated alias of a moved module (`tf_vib._deprecated.MOVED_MODULES`); importing it warns."""

from tf_vib._deprecated import moved_names

globals().update(moved_names(__name__))
