"""The benchmark harness behind ``tf-vib bench``: tf-vib against other compression methods.

``runner`` trains and measures (per data set and seed), ``paper`` the paper-sized setting,
``aggregate`` loads the per-run JSON and checks the targets, ``report`` and ``floor`` write
``docs/benchmarks.md`` and its plots. Like ``tf_vib.cli``, and unlike the rest of tf_vib, it
imports ``converters`` (to convert and time every model's files). Nothing here is imported
by the library itself.
"""
