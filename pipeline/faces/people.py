"""People across the album: incremental clustering of identity embeddings (a pure function).

The caller keeps the people (centroid, count) in its database and hands them in with the new faces;
each new face is assigned to a person or starts a new one:

1. Each new face goes to the nearest existing person whose centroid is closer than ``threshold``,
   unless that person already got a face from the same photo in this call (two faces of one photo are
   two people), in which case the next nearest is tried.
2. The faces left over are clustered among themselves (average linkage, same threshold, again never
   joining two faces of one photo); each cluster becomes a new person.
3. Centroids are running means over all their members (so a person drifts slowly with age).

Deterministic: the same inputs give the same output. Distances are dlib's (0.6 = same person); the
default 0.45 is stricter (on the test photos different people came as close as 0.50, the same person in two
group photos as far as 0.44), because a wrong merge (two people named alike) is worse than a split (the user
merges two people in the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_THRESHOLD = 0.45


@dataclass
class Person:
    person_id: int
    centroid: np.ndarray
    """(128,) mean embedding of the members."""
    count: int
    """How many faces were averaged into the centroid."""
    members: list[str] = field(default_factory=list)
    """Face keys (caller-defined, e.g. "<job_id>:<face index>") added by this module's calls."""


@dataclass
class Assignment:
    face_key: str
    person_id: int
    distance: float
    """Distance to the person's centroid before this face was added (0.0 for a new person's first face)."""
    new_person: bool


def assign_people(
    people: Sequence[Person],
    embeddings: Sequence[np.ndarray],
    face_keys: Sequence[str],
    photo_keys: Sequence[str] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[list[Assignment], list[Person]]:
    """Assign new faces to existing people or new ones; returns the assignments and the updated people.

    ``people`` are not modified; the returned list holds copies (existing ones first, in their order,
    then the new people). ``photo_keys[i]`` names the photo of face ``i`` (faces of one photo are never
    put in the same person); None means every face is from a different photo.
    """
    if len(embeddings) != len(face_keys):
        raise ValueError("embeddings and face_keys differ in length")
    photos = list(photo_keys) if photo_keys is not None else [f"#{i}" for i in range(len(face_keys))]
    out = [Person(p.person_id, np.array(p.centroid, np.float64), p.count, list(p.members)) for p in people]
    next_id = max((p.person_id for p in out), default=0) + 1
    emb = [np.asarray(e, np.float64) for e in embeddings]
    photos_of: dict[int, set[str]] = {p.person_id: set() for p in out}
    result: dict[int, Assignment] = {}

    # 1. Existing people, most confident matches first.
    if out:
        cents = np.stack([p.centroid for p in out])
        pairs = sorted(
            (float(np.linalg.norm(cents[j] - e)), i, j) for i, e in enumerate(emb) for j in range(len(out))
        )
        for d, i, j in pairs:
            if d >= threshold:
                break
            person = out[j]
            if i in result or photos[i] in photos_of[person.person_id]:
                continue
            result[i] = Assignment(face_keys[i], person.person_id, d, False)
            photos_of[person.person_id].add(photos[i])
        for i, a in sorted(result.items()):
            person = next(p for p in out if p.person_id == a.person_id)
            person.centroid = (person.centroid * person.count + emb[i]) / (person.count + 1)
            person.count += 1
            person.members.append(face_keys[i])

    # 2. The rest: average-linkage agglomerative clustering with cannot-link inside one photo.
    rest = [i for i in range(len(emb)) if i not in result]
    clusters: list[list[int]] = [[i] for i in rest]
    while len(clusters) > 1:
        best: tuple[float, int, int] | None = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                if {photos[i] for i in clusters[a]} & {photos[i] for i in clusters[b]}:
                    continue
                d = float(
                    np.mean([np.linalg.norm(emb[i] - emb[k]) for i in clusters[a] for k in clusters[b]])
                )
                if d < threshold and (best is None or d < best[0]):
                    best = (d, a, b)
        if best is None:
            break
        _, a, b = best
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    for members in sorted(clusters, key=min):
        centroid = np.mean([emb[i] for i in members], axis=0)
        person = Person(next_id, centroid, len(members), [face_keys[i] for i in members])
        next_id += 1
        out.append(person)
        for i in members:
            result[i] = Assignment(
                face_keys[i], person.person_id, float(np.linalg.norm(emb[i] - centroid)), True
            )
    return [result[i] for i in range(len(emb))], out
