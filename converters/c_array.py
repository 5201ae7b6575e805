"""A ``.tflite`` file as a C array, for microcontroller builds (TFLite Micro)."""

import re

__all__ = ["to_c_array"]


def to_c_array(flat, name="model_tflite", *, line_bytes=12):
    """The bytes of a ``.tflite`` file as a C/C++ header, like ``xxd -i`` but aligned.

    TFLite Micro reads the model in place, so the array is 16-byte aligned.

    Args:
      flat: the file's bytes.
      name: a C identifier for the array; ``<name>_len`` holds its length.
      line_bytes: bytes per line.

    Returns:
      The header's text.
    """
    if not isinstance(flat, (bytes, bytearray)):
        raise TypeError(f"`flat` must be bytes; received {type(flat).__name__}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"`name` must be a C identifier; received {name!r}")
    guard = f"{name.upper()}_H_"
    rows = [
        "  " + ", ".join(f"0x{b:02x}" for b in flat[i : i + line_bytes]) + ","
        for i in range(0, len(flat), line_bytes)
    ]
    return "\n".join([
        f"// {len(flat)} bytes of TFLite flatbuffer, written by tf-vib.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"alignas(16) const unsigned char {name}[] = {{",
        *rows,
        "};",
        f"const unsigned int {name}_len = {len(flat)};",
        "",
        f"#endif  // {guard}",
        "",
    ])
