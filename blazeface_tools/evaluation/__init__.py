"""Measurements from the BlazeFace paper, run on our pipeline (README "Accuracy and stability").

    jitter.py  prediction jitter under small shifts, blending vs NMS (paper §3)
    ap.py      VOC-style average precision at IoU 0.5 with face-size buckets
    wider.py   WIDER FACE annotation files (the labelled set's format)
    cli.py     `blazeface eval jitter|ap`

The metric code is pure numpy and imports no model; only the `measure_*`/`detect_*` helpers run one.
"""
