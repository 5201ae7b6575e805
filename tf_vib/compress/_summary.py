"""summary(): what stripping keeps, per layer, as a table the caller may print."""

import dataclasses
import json

from tf_vib.surgery import LayerRecord, strip_masks

__all__ = ["summary", "ModelSummary", "format_table"]


def format_table(headers, rows):
    """A plain-text table with right-aligned numbers."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(
            value.ljust(width) if i == 0 else value.rjust(width)
            for i, (value, width) in enumerate(zip(row, widths, strict=True))
        ))
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _ratio(before, after):
    return f"{before / after:.1f}x" if after else "-"


@dataclasses.dataclass
class ModelSummary:
    """Per-layer units, inputs and parameters before and after ``strip_masks``.

    ``str(summary)`` is a table; ``to_dict()`` / ``to_json()`` give the numbers.
    """

    model_name: str
    records: list[LayerRecord]

    @property
    def params_before(self):
        return sum(r.params_before for r in self.records)

    @property
    def params_after(self):
        return sum(r.params_after for r in self.records)

    def to_dict(self):
        return {
            "model": self.model_name,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "bytes_float32_before": 4 * self.params_before,
            "bytes_float32_after": 4 * self.params_after,
            "bytes_int8_before": self.params_before,
            "bytes_int8_after": self.params_after,
            "layers": [dataclasses.asdict(r) for r in self.records],
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def __str__(self):
        def kept(a, b):
            return None if b is None else f"{a}/{b}"

        rows = [
            (r.name, r.kind, kept(r.units_kept, r.units_total), kept(r.inputs_kept, r.inputs_total),
             r.params_before, r.params_after, _ratio(r.params_before, r.params_after))
            for r in self.records
        ]
        rows.append(("total", "", None, None, self.params_before, self.params_after,
                     _ratio(self.params_before, self.params_after)))
        table = format_table(
            ("layer", "kind", "units kept", "inputs kept", "params before", "params after", "ratio"),
            rows,
        )
        sizes = (
            f"float32: {4 * self.params_before:,} -> {4 * self.params_after:,} bytes; "
            f"int8: {self.params_before:,} -> {self.params_after:,} bytes"
        )
        return f"Model {self.model_name!r}\n{table}\n{sizes}"


def summary(model, *, threshold=None, min_units=0):
    """What ``strip_masks(model, threshold=...)`` keeps, layer by layer.

    Args:
      model: a Sequential or functional tf_keras model, with or without VIB layers.
      threshold, min_units: as in ``strip_masks``.

    Returns:
      A ``ModelSummary``: print it for a table, or read its numbers. VIB mask variables
      are not counted as parameters: they vanish on stripping.
    """
    _, records = strip_masks(model, threshold=threshold, min_units=min_units, return_records=True)
    return ModelSummary(model.name, records)
