"""Axis names: validation, the inference policy, and the plane mapping."""

from __future__ import annotations

import numpy as np
import pytest

from napari_addunet.engine.axes import AxesError, infer_axes, parse_axes, plane_layout, resolve_axes


@pytest.mark.parametrize(
    ("shape", "rgb", "expected"),
    [
        ((64, 80), None, "YX"),
        ((10, 64, 80), None, "ZYX"),
        ((1, 64, 80), None, "ZYX"),
        ((64, 80, 3), None, "YXC"),
        ((64, 80, 4), None, "YXC"),
        ((64, 80, 3), True, "YXC"),
        ((10, 64, 80, 3), None, "ZYXC"),
        ((3, 64, 80), False, None),  # first axis 3, not RGB -> ambiguous
        ((10, 64, 3), False, "ZYX"),
    ],
)
def test_infer_axes_policy(shape, rgb, expected):
    if expected is None:
        with pytest.raises(AxesError, match="axes="):
            infer_axes(shape, rgb=rgb)
    else:
        assert infer_axes(shape, rgb=rgb) == expected


@pytest.mark.parametrize("first", [2, 3, 4])
def test_small_first_axis_is_never_guessed(first):
    # could be channels or slices: a clear message, never a silent Z
    with pytest.raises(AxesError) as err:
        infer_axes((first, 32, 32))
    assert "ZYX" in str(err.value) and "CYX" in str(err.value)


@pytest.mark.parametrize("shape", [(2, 5, 32, 32), (6, 7, 32, 32), (2, 3, 4, 32, 32)])
def test_4d_and_5d_need_explicit_axes(shape):
    with pytest.raises(AxesError, match="Pass axes="):
        infer_axes(shape)


def test_rgb_true_needs_colour_axis():
    with pytest.raises(AxesError, match="rgb=True"):
        infer_axes((32, 32, 5), rgb=True)


@pytest.mark.parametrize("shape", [(5,), (), (1, 2, 3, 4, 5, 6)])
def test_bad_dimensionality(shape):
    with pytest.raises(AxesError):
        infer_axes(shape)


@pytest.mark.parametrize(
    ("axes", "shape", "match"),
    [
        ("ZYQ", (2, 3, 4), "unknown letter"),
        ("SYX", (3, 4, 4), "'C' here"),
        ("ZZX", (2, 3, 4), "repeats"),
        ("ZCY", (2, 3, 4), "must contain Y and X"),
        ("YX", (2, 3, 4), "names 2 dimension"),
        (3, (2, 3, 4), "string"),
    ],
)
def test_parse_axes_errors(axes, shape, match):
    with pytest.raises(AxesError, match=match):
        parse_axes(axes, shape)


def test_parse_axes_accepts_any_order_and_case():
    assert parse_axes("xyz", (2, 3, 4)) == "XYZ"
    assert parse_axes(" tzcyx ", (1, 2, 3, 4, 5)) == "TZCYX"
    assert resolve_axes((4, 5), None) == "YX"


LAYOUTS = [
    ("YX", (6, 7)),
    ("ZYX", (3, 6, 7)),
    ("TYX", (2, 6, 7)),
    ("TZYX", (2, 3, 6, 7)),
    ("YXC", (6, 7, 3)),
    ("CYX", (2, 6, 7)),
    ("ZCYX", (3, 2, 6, 7)),
    ("CZYX", (2, 3, 6, 7)),
    ("TCYX", (2, 2, 6, 7)),
    ("TZCYX", (2, 3, 2, 6, 7)),
    ("XYZ", (7, 6, 3)),
]


@pytest.mark.parametrize(("axes", "shape"), LAYOUTS)
@pytest.mark.parametrize("model_channels", [1, "all"])
def test_planes_round_trip(axes, shape, model_channels):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    channels = shape[axes.index("C")] if "C" in axes else 1
    in_ch = channels if model_channels == "all" else 1
    layout = plane_layout(shape, axes, in_ch)
    out = np.zeros_like(data)
    seen = 0
    for pos in layout.plane_positions():
        plane = layout.to_plane(data[layout.index(pos)], pos)
        assert plane.shape == (layout.plane_channels, layout.height, layout.width)
        out[layout.index(pos)] = layout.from_plane(plane, pos)
        seen += 1
    assert seen == layout.num_planes
    np.testing.assert_array_equal(out, data)
    assert layout.plane_grid == tuple(layout.size(a) for a in layout.plane_axes)


def test_plane_is_oriented_y_then_x():
    data = np.zeros((3, 7, 6), dtype=np.float32)  # axes X, Y, Z
    data[1, 2, 0] = 1.0  # x=1, y=2, z=0
    layout = plane_layout(data.shape, "XYZ")
    pos = {"Z": 0}
    plane = layout.to_plane(data[layout.index(pos)], pos)
    assert plane.shape == (1, 7, 3) and plane[0, 2, 1] == 1.0


def test_model_channel_mismatch_is_clear():
    with pytest.raises(AxesError, match="takes 3 input channels but the data has 2"):
        plane_layout((2, 8, 8), "CYX", model_in_channels=3)
    with pytest.raises(AxesError, match="no C axis"):
        plane_layout((8, 8), "YX", model_in_channels=3)
    with pytest.raises(AxesError, match="output"):
        plane_layout((8, 8), "YX", model_in_channels=1, model_out_channels=2)


def test_joint_channels_when_model_matches():
    layout = plane_layout((5, 8, 9, 3), "ZYXC", model_in_channels=3)
    assert layout.joint_channels and layout.plane_axes == "Z" and layout.plane_channels == 3
    layout = plane_layout((5, 8, 9, 3), "ZYXC", model_in_channels=1)
    assert not layout.joint_channels and layout.plane_axes == "ZC" and layout.num_planes == 15
