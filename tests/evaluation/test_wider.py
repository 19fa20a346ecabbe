"""WIDER FACE annotation format, and the labelled set in tests/data/eval built in it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazeface_tools.evaluation.wider import (
    ImageAnnotation,
    WiderFace,
    WiderFormatError,
    format_annotations,
    parse_annotations,
    read_annotations,
    write_annotations,
)

EVAL = Path(__file__).resolve().parents[1] / "data" / "eval"

# As WIDER ships it: trailing spaces, an image without faces written as "0" plus a line of zeros.
WIDER_SAMPLE = "\n".join(
    [
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "1",
        "449 330 122 149 0 0 0 0 0 0 ",
        "0--Parade/0_Parade_Parade_0_904.jpg",
        "2",
        "361 98 263 339 0 0 0 0 0 0 ",
        "78 221 7 8 2 0 0 0 0 0 ",
        "0--Parade/0_Parade_Parade_0_none.jpg",
        "0",
        "0 0 0 0 0 0 0 0 0 0 ",
        "1--Handshaking/1_Handshaking_last.jpg",
        "1",
        "10 20 30 40 1 1 0 1 2 1 ",
        "",
    ]
)


def test_parse_wider_sample() -> None:
    anns = parse_annotations(WIDER_SAMPLE)
    assert [a.filename for a in anns] == [
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "0--Parade/0_Parade_Parade_0_904.jpg",
        "0--Parade/0_Parade_Parade_0_none.jpg",
        "1--Handshaking/1_Handshaking_last.jpg",
    ]
    assert [len(a.faces) for a in anns] == [1, 2, 0, 1]
    assert anns[1].faces[1] == WiderFace(78, 221, 7, 8, blur=2)
    assert anns[3].faces[0] == WiderFace(10, 20, 30, 40, 1, 1, 0, 1, 2, 1)
    np.testing.assert_array_equal(anns[0].boxes_xyxy(), [[449, 330, 571, 479]])
    assert anns[2].boxes_xyxy().shape == (0, 4)
    assert anns[3].invalid().tolist() == [True]


def test_zero_faces_without_placeholder_line() -> None:
    anns = parse_annotations("a.jpg\n0\nb.jpg\n1\n1 2 3 4 0 0 0 0 0 0\nc.jpg\n0\n")
    assert [(a.filename, len(a.faces)) for a in anns] == [("a.jpg", 0), ("b.jpg", 1), ("c.jpg", 0)]


def test_missing_attributes_read_as_zero() -> None:
    (ann,) = parse_annotations("a.jpg\n1\n1.5 2 3 4\n")
    assert ann.faces[0] == WiderFace(1.5, 2, 3, 4)


def test_round_trip(tmp_path: Path) -> None:
    anns = [
        ImageAnnotation(
            "x/a.jpg", (WiderFace(1, 2, 3, 4), WiderFace(10.25, 20.5, 30.125, 40, blur=2, pose=1))
        ),
        ImageAnnotation("x/empty.jpg", ()),
        ImageAnnotation("y/b.jpg", (WiderFace(0, 0, 7, 8, invalid=1),)),
    ]
    path = tmp_path / "gt.txt"
    write_annotations(path, anns)
    assert read_annotations(path) == anns
    text = path.read_text()
    assert "1 2 3 4 0 0 0 0 0 0\n" in text  # whole numbers stay integers
    assert "x/empty.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n" in text  # WIDER's placeholder for no faces
    assert parse_annotations(format_annotations(parse_annotations(WIDER_SAMPLE))) == parse_annotations(
        WIDER_SAMPLE
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a.jpg\n", 2),  # no count
        ("a.jpg\nx\n", 2),  # count not a number
        ("a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n", 4),  # file ends early
        ("a.jpg\n1\n1 2 3\n", 3),  # too few numbers
        ("a.jpg\n1\n1 2 -3 4 0 0 0 0 0 0\n", 3),  # negative size
        ("a.jpg\n1\n1 2 nan 4 0 0 0 0 0 0\n", 3),
        ("a.jpg\n-1\n", 2),
    ],
)
def test_malformed_files_name_the_line(text: str, line: int) -> None:
    with pytest.raises(WiderFormatError, match=f"line {line}:"):
        parse_annotations(text)


def test_unwritable_file_name() -> None:
    with pytest.raises(ValueError):
        format_annotations([ImageAnnotation(" padded.jpg", ())])


# -- the labelled set -------------------------------------------------------------------------------------


def test_labelled_set_matches_dlib_boxes_and_files() -> None:
    anns = {a.filename: a for a in read_annotations(EVAL / "labels.txt")}
    assert len(anns) == 21
    assert sum(len(a.faces) for a in anns.values()) == 127

    # originals: dlib's boxes as (left, top, width, height), unchanged
    dlib = {name: a for name, a in anns.items() if name.startswith("dlib/")}
    assert sum(len(a.faces) for a in dlib.values()) == 43
    assert len(dlib["dlib/dogs.jpg"].faces) == 0
    for xml_name in ("training.xml", "testing.xml"):
        for im in ET.parse(EVAL / "source" / xml_name).getroot().iter("image"):
            expected = [
                tuple(float(b.get(k, "nan")) for k in ("left", "top", "width", "height"))
                for b in im.iter("box")
            ]
            got = [(f.x, f.y, f.w, f.h) for f in dlib[f"dlib/{im.get('file')}"].faces]
            assert got == expected

    for name, ann in anns.items():
        pixels = cv2.imread(str(EVAL / "images" / name), cv2.IMREAD_UNCHANGED)
        assert pixels is not None, name
        boxes = ann.boxes_xyxy()
        h, w = pixels.shape[:2]
        assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all(), name


def test_lowres_boxes_are_scaled_originals() -> None:
    anns = {a.filename: a for a in read_annotations(EVAL / "labels.txt")}
    original = anns["dlib/2008_002470.jpg"].boxes_xyxy()
    low = anns["lowres/2008_002470.jpg"].boxes_xyxy()
    # 500×332 → 200×133: per-axis factors, exactly as the resize maps pixel edges (3 decimals in the file)
    np.testing.assert_allclose(low, original * [200 / 500, 133 / 332, 200 / 500, 133 / 332], atol=1e-3)
