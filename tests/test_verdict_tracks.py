import numpy as np
import pytest

from dfscan.faces.crop import crop_face, square_box
from dfscan.faces.tracks import Detection, link_tracks, match_cost
from dfscan.verdict import aggregate, label_for, min_track_faces, suspicious_segments


def test_aggregate_rules():
    scores = [0.1, 0.2, 0.9, 0.8]
    assert aggregate(scores, "mean") == pytest.approx(0.5)
    assert aggregate(scores, "median") == pytest.approx(0.5)
    assert aggregate(scores, "max") == pytest.approx(0.9)
    assert aggregate(scores, "topk", top_k=2) == pytest.approx(0.85)
    assert aggregate(scores, "topk", top_k=10) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        aggregate([], "mean")
    with pytest.raises(ValueError):
        aggregate(scores, "mode")


def test_label_and_min_track():
    assert label_for(0.5, 0.5) == "FAKE"
    assert label_for(0.49, 0.5) == "REAL"
    assert min_track_faces(32) == 3
    assert min_track_faces(2) == 2


def test_segments_split_on_unflagged_frames():
    times = [0, 1, 2, 3, 4, 5, 6]
    scores = [0.9, 0.8, 0.1, 0.7, 0.2, 0.95, 0.99]
    segments = suspicious_segments(times, scores, 0.5)
    assert [(s["start_s"], s["end_s"], s["n_frames"]) for s in segments] == [(0, 1, 2), (3, 3, 1), (5, 6, 2)]
    assert segments[0]["mean_score"] == pytest.approx(0.85)
    assert suspicious_segments(times, [0.1] * 7, 0.5) == []


def _det(pos, x, y, side=50.0, score=0.99):
    return Detection(pos, np.array([x, y, x + side, y + side], dtype=float), score)


def test_two_faces_become_two_tracks_across_gaps():
    frames = [
        [_det(0, 10, 10), _det(0, 400, 10)],
        [_det(1, 420, 15), _det(1, 20, 12)],   # order swapped, both moved a little
        [_det(2, 30, 14)],                     # right face missed in this frame
        [_det(3, 40, 15), _det(3, 440, 20)],   # comes back: same track
    ]
    tracks = link_tracks(frames)
    assert len(tracks) == 2
    left, right = sorted(tracks, key=lambda t: t.detections[0].box[0])
    assert [d.frame_pos for d in left.detections] == [0, 1, 2, 3]
    assert [d.frame_pos for d in right.detections] == [0, 1, 3]
    assert all(d.box[0] < 100 for d in left.detections)


def test_far_jump_or_size_change_starts_new_track():
    assert match_cost(np.array([0, 0, 50, 50.0]), np.array([0, 0, 200, 200.0])) == float("inf")
    tracks = link_tracks([[_det(0, 10, 10)], [_det(1, 600, 400)]])
    assert len(tracks) == 2


def test_crop_is_square_centred_and_padded_at_border():
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[40:60, 90:110] = 255  # a white square at the centre
    crop = crop_face(image, (90, 40, 110, 60), size=32, margin=0.0)
    assert crop.shape == (32, 32, 3)
    assert crop.mean() > 250  # the box is exactly the white square
    wide = crop_face(image, (90, 40, 110, 60), size=32, margin=1.0)  # twice the side: white in the middle half
    assert wide[16, 16].min() > 200 and wide[2, 2].max() < 30
    corner = crop_face(image, (-10, -10, 10, 10), size=20, margin=0.0)  # half outside: black padding
    assert corner.shape == (20, 20, 3)
    x1, y1, x2, y2 = square_box((0, 0, 10, 20), 0.5)
    assert (x2 - x1) == pytest.approx(30) and (y2 - y1) == pytest.approx(30)
