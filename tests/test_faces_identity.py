"""Identity embeddings and people clustering across an album."""

from __future__ import annotations

import cv2
import numpy as np
from albumd.pipeline.faces import (
    Person,
    assign_people,
    embed_aligned_crop,
    identity_distance,
    same_person,
)

try:
    from faces_fixtures import detected, manifest
except ImportError:  # tests/ made a package
    from .faces_fixtures import detected, manifest

SINGLE_PEOPLE = [n for n in sorted(manifest()) if not n.startswith("group4")]


def _degrade(crop: np.ndarray, how: str) -> np.ndarray:
    if how == "blur":
        return cv2.GaussianBlur(crop, (0, 0), 2.5)
    if how == "recolour":
        return np.clip(crop * np.array([1.15, 0.95, 0.8], np.float32) + 0.03, 0, 1)
    if how == "noise":
        return np.clip(crop + np.random.default_rng(1).normal(0, 0.04, crop.shape).astype(np.float32), 0, 1)
    if how == "shifted":  # a restorer moving the face by a few pixels
        m = np.float32([[1, 0, 6], [0, 1, -5]])
        return cv2.warpAffine(crop, m, crop.shape[1::-1], borderMode=cv2.BORDER_REFLECT_101)
    raise ValueError(how)


def test_same_face_degraded_is_close() -> None:
    for name in ("pair_a.png", "bop_old_w_scratch_b.png", "group4_b.png", "bop_old_b.png"):
        for f in detected(name)[0][:2]:
            for how in ("blur", "recolour", "noise", "shifted"):
                other = embed_aligned_crop(_degrade(f.aligned.crop, how))
                d = identity_distance(f.embedding, other)
                assert d < 0.3, (name, f.index, how, d)
                assert same_person(f.embedding, other)


def test_different_people_are_far() -> None:
    faces = [f for n in SINGLE_PEOPLE for f in detected(n)[0]]
    assert len(faces) >= 10
    dists = [identity_distance(a.embedding, b.embedding) for i, a in enumerate(faces) for b in faces[i + 1 :]]
    # dlib's "same person" line is 0.6; the closest strangers here are two girls in autochromes (0.50),
    # one a 50 px face looking down, hence the people threshold of 0.45
    assert min(dists) > 0.45, min(dists)
    assert np.mean(np.array(dists) > 0.6) > 0.95
    assert float(np.mean(dists)) > 0.7


def test_embedding_of_crop_matches_dlib_own_alignment() -> None:
    """The template crop gives the embedding dlib's own chip extraction gives (same identity)."""
    import dlib
    from albumd.pipeline.faces import models
    from albumd.pipeline.faces.detect import to_uint8
    from faces_fixtures import photo

    img = to_uint8(photo("pair_a.png"))
    for f in detected("pair_a.png")[0]:
        x, y, w, h = f.box
        shape = dlib.full_object_detection(
            dlib.rectangle(x, y, x + w, y + h), [dlib.point(round(px), round(py)) for px, py in f.landmarks5]
        )
        ref = np.array(models.embedding_model().compute_face_descriptor(img, shape, 0, 0.25))
        assert identity_distance(f.embedding, ref) < 0.2


def test_embed_rejects_bad_input() -> None:
    assert embed_aligned_crop(np.zeros((512, 400, 3), np.float32)) is None
    assert embed_aligned_crop(np.full((512, 512, 3), np.nan, np.float32)) is None
    assert identity_distance(None, np.zeros(128)) == float("inf")


def _emb(name: str) -> list[np.ndarray]:
    return [f.embedding for f in detected(name)[0]]


def test_people_across_two_group_photos() -> None:
    """group4_a and group4_b show the same four people: each becomes one person with a face from each."""
    a, b = _emb("group4_a.jpg"), _emb("group4_b.png")
    keys = [f"a:{i}" for i in range(4)] + [f"b:{i}" for i in range(4)]
    photos = ["a"] * 4 + ["b"] * 4
    _, people = assign_people([], a + b, keys, photos)
    assert len(people) == 4
    for p in people:
        assert sorted(k[0] for k in p.members) == ["a", "b"]
    # incremental: the first photo's people exist; the second photo's faces join them
    first, people_a = assign_people([], a, keys[:4], photos[:4])
    assert len(people_a) == 4 and all(x.new_person for x in first)
    second, people_ab = assign_people(people_a, b, keys[4:], photos[4:])
    assert len(people_ab) == 4 and not any(x.new_person for x in second)
    together = {frozenset(p.members) for p in people}
    incremental = {frozenset(p.members) for p in people_ab}
    assert together == incremental
    # the input people are not modified
    assert all(p.count == 1 for p in people_a)
    # centroids are the mean of the members
    for p in people_ab:
        idx = [keys.index(k) for k in p.members]
        assert np.allclose(p.centroid, np.mean([(a + b)[i] for i in idx], axis=0))


def test_faces_of_one_photo_never_one_person() -> None:
    e = np.zeros(128)
    assignments, people = assign_people([], [e, e + 0.01, e + 0.02], ["x:0", "x:1", "y:0"], ["x", "x", "y"])
    assert len(people) == 2
    assert assignments[0].person_id != assignments[1].person_id


def test_strangers_get_new_people() -> None:
    existing = [Person(7, np.zeros(128), 3, ["old:0", "old:1", "old:2"])]
    far = np.full(128, 0.2)  # distance 2.26 from the existing centroid
    near = np.full(128, 0.02)  # distance 0.23
    assignments, people = assign_people(existing, [far, near], ["n:0", "n:1"], ["p1", "p2"])
    assert assignments[1].person_id == 7 and not assignments[1].new_person
    assert assignments[0].new_person and assignments[0].person_id == 8
    assert [p.person_id for p in people] == [7, 8]
    assert people[0].count == 4 and "n:1" in people[0].members
