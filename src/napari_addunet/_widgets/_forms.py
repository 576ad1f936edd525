"""Forms built from a config class's ``describe()`` rows: one editor per setting, with its bounds.

The architecture settings (``get_config_class(name).describe()``) and the training settings
(``TrainingConfig.describe()``) declare type, default, bounds and a one-line doc per field;
the form shows exactly those, so a new setting or a changed bound appears here without
touching the widget.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

INT_LIMIT = 2**31 - 1


def choices_of(config_cls: type, name: str) -> tuple[Any, ...]:
    """The allowed values of a ``Literal`` setting."""
    hint = typing.get_type_hints(config_cls)[name]
    return typing.get_args(hint)


def _tooltip(row: dict[str, Any]) -> str:
    bounds = []
    if "ge" in row or "le" in row:
        bounds.append(f"range {row.get('ge', '-inf')} .. {row.get('le', 'inf')}")
    if "item_ge" in row or "item_le" in row:
        bounds.append(f"items {row.get('item_ge', '')} .. {row.get('item_le', '')}")
    if row.get("item_odd"):
        bounds.append("odd items")
    if "min_len" in row or "max_len" in row:
        bounds.append(f"{row.get('min_len', 1)} to {row.get('max_len', '')} items")
    doc = row.get("doc", "")
    return doc + (f" ({'; '.join(bounds)})" if bounds else "")


def _places(value: float) -> int:
    """Decimal places that write ``value`` exactly (at most 8)."""
    for places in range(9):
        if abs(round(value, places) - value) <= 1e-12 * max(1.0, abs(value)):
            return places
    return 8


def _decimals(row: dict[str, Any]) -> int:
    """Decimals of a float editor: at least 3, enough for its bounds and default (at most 8).

    A spin box rounds its range to its decimals: with too few, a bound such as 0.9999 would
    become 1.0, and values the setting refuses could be typed.
    """
    values = [abs(float(v)) for v in (row.get("ge"), row.get("le"), row.get("default")) if v is not None]
    nonzero = [v for v in values if v > 0]
    by_size = 2 - math.floor(math.log10(min(nonzero))) if nonzero else 3
    return int(min(8, max(3, by_size, *(_places(v) for v in values))))


class ConfigForm(QWidget):
    """Editors for the settings of ``config_cls``.

    Parameters
    ----------
    config_cls
        A class with ``describe()`` (a model config or ``TrainingConfig``).
    include
        Only these settings, in this order (default: all).
    exclude
        Settings not shown (their defaults apply).
    labels
        Display names for some settings.
    """

    def __init__(
        self,
        config_cls: type,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        labels: dict[str, str] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.config_cls = config_cls
        rows = {row["name"]: row for row in config_cls.describe()}
        names = list(include) if include is not None else list(rows)
        skip = set(exclude)
        self.rows = {n: rows[n] for n in names if n in rows and n not in skip}
        self.editors: dict[str, QWidget] = {}
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        labels = labels or {}
        for name, row in self.rows.items():
            editor = self._editor(name, row)
            editor.setToolTip(_tooltip(row))
            editor.setObjectName(name)
            self.editors[name] = editor
            layout.addRow(labels.get(name, name.replace("_", " ")), editor)

    def _editor(self, name: str, row: dict[str, Any]) -> QWidget:
        kind, default = row["type"], row["default"]
        if kind == "bool":
            box = QCheckBox()
            box.setChecked(bool(default))
            return box
        if kind == "choice":
            combo = QComboBox()
            for value in choices_of(self.config_cls, name):
                combo.addItem(str(value), value)
            combo.setCurrentIndex(max(0, combo.findData(default)))
            return combo
        if kind == "int":
            spin = QSpinBox()
            spin.setRange(int(row.get("ge", -INT_LIMIT)), int(min(row.get("le", INT_LIMIT), INT_LIMIT)))
            spin.setValue(int(default))
            return spin
        if kind == "float":
            dspin = QDoubleSpinBox()
            dspin.setDecimals(_decimals(row))
            dspin.setRange(float(row.get("ge", -1e12)), float(row.get("le", 1e12)))
            dspin.setValue(float(default))
            step = abs(float(default)) / 10 if default else 10 ** -min(dspin.decimals(), 3)
            dspin.setSingleStep(step)
            return dspin
        edit = QLineEdit()
        if kind.startswith("tuple"):
            edit.setText(",".join(str(v) for v in default))
            example = (
                f", e.g. {','.join(str(v) for v in default)}" if default else " (empty: see the tooltip)"
            )
            edit.setPlaceholderText(f"comma-separated integers{example}")
        else:
            edit.setText(str(default))
        return edit

    def values(self) -> dict[str, Any]:
        """The settings as typed (validated later by the config class)."""
        out: dict[str, Any] = {}
        for name, editor in self.editors.items():
            if isinstance(editor, QCheckBox):
                out[name] = editor.isChecked()
            elif isinstance(editor, QComboBox):
                out[name] = editor.currentData()
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                out[name] = editor.value()
            else:
                out[name] = editor.text().strip()
        return out

    def set_values(self, **values: Any) -> None:
        """Set some editors (unknown names raise ``KeyError``)."""
        for name, value in values.items():
            editor = self.editors[name]
            if isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, QComboBox):
                i = editor.findData(value)
                if i < 0:
                    raise ValueError(
                        f"{name} must be one of {[editor.itemData(k) for k in range(editor.count())]}"
                    )
                editor.setCurrentIndex(i)
            elif isinstance(editor, QSpinBox):
                editor.setValue(int(value))
            elif isinstance(editor, QDoubleSpinBox):
                editor.setValue(float(value))
            else:
                editor.setText(
                    ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
                )
