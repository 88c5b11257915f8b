"""People across the archive: every face's identity embedding is stored, and faces are clustered into
people incrementally as photos are archived, so that a user can name a person and give them a prompt."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from albumd.pipeline.faces import Face, Person, assign_people
from albumd.pipeline.faces.people import DEFAULT_THRESHOLD
from albumd.pipeline.imageio import encode_image, thumbnail
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from .archive import ArchiveWriter
from .models import FaceRow, Job, utcnow
from .models import Person as PersonRow

THUMB_SIDE = 160


class PeopleStore:
    def __init__(
        self, sessions: sessionmaker[Session], thumbs: Path, threshold: float = DEFAULT_THRESHOLD
    ) -> None:
        self.sessions = sessions
        self.thumbs = thumbs
        self.threshold = threshold

    def prompt_for(self) -> Callable[[Face], str | None]:
        """A lookup from a face to the prompt of the person it most likely is (None: no prompt set)."""
        with self.sessions() as s:
            rows = s.execute(
                select(PersonRow.centroid, PersonRow.prompt).where(PersonRow.prompt.is_not(None))
            ).all()
        if not rows:
            return lambda _face: None
        cents = np.array([json.loads(c) for c, _ in rows], np.float64)
        prompts = [p for _, p in rows]

        def lookup(face: Face) -> str | None:
            if face.embedding is None:
                return None
            d = np.linalg.norm(cents - np.asarray(face.embedding, np.float64), axis=1)
            best = int(np.argmin(d))
            return prompts[best] if d[best] < self.threshold else None

        return lookup

    def record(self, job_id: int, prints: list[tuple[int, list[Face]]]) -> dict[tuple[int, int], int]:
        """Store the faces of one photo and assign them to people. Idempotent for a re-run of the job.

        Returns (print index, face index) -> person id.
        """
        keys, embeddings, faces = [], [], []
        for print_index, found in prints:
            for face in found:
                if face.embedding is not None:
                    keys.append(f"{job_id}:{print_index}:{face.index}")
                    embeddings.append(np.asarray(face.embedding, np.float64))
                    faces.append((print_index, face))
        if not faces:
            return {}
        now = utcnow()
        with self.sessions.begin() as s:
            if s.bind is not None and s.bind.dialect.name == "postgresql":
                # Two daemons assigning at once could each create the same new person.
                s.execute(text("LOCK TABLE people IN SHARE ROW EXCLUSIVE MODE"))
            existing = {
                (r.print_index, r.face_index): r.person_id
                for r in s.execute(select(FaceRow).where(FaceRow.job_id == job_id)).scalars()
            }
            if existing:
                return {k: v for k, v in existing.items() if v is not None}
            rows = s.execute(select(PersonRow).order_by(PersonRow.id)).scalars().all()
            people = [Person(r.id, np.array(json.loads(r.centroid)), r.face_count) for r in rows]
            known = {r.id: r for r in rows}
            by_id = dict(known)
            assignments, updated = assign_people(
                people, embeddings, keys, [str(job_id)] * len(keys), threshold=self.threshold
            )
            id_map: dict[int, int] = {}
            for person in updated:
                # A new person's id from the clustering is provisional; the database assigns the real one.
                row = known.get(person.person_id)
                if row is None:
                    row = PersonRow(centroid="[]", face_count=0, created_at=now, updated_at=now)
                    s.add(row)
                    s.flush()
                    by_id[row.id] = row
                id_map[person.person_id] = row.id
                row.centroid = json.dumps([round(float(v), 6) for v in person.centroid])
                row.face_count = person.count
                row.updated_at = now
            result: dict[tuple[int, int], int] = {}
            for (print_index, face), assignment in zip(faces, assignments, strict=True):
                person_id = id_map[assignment.person_id]
                s.add(
                    FaceRow(
                        job_id=job_id,
                        print_index=print_index,
                        face_index=face.index,
                        person_id=person_id,
                        distance=assignment.distance,
                        embedding=json.dumps([round(float(v), 6) for v in face.embedding]),  # type: ignore[union-attr]
                        box=json.dumps(face.box),
                        created_at=now,
                    )
                )
                result[(print_index, face.index)] = person_id
                row = by_id[person_id]
                if row.thumbnail is None and face.aligned is not None:
                    row.thumbnail = str(self._thumbnail(person_id, face))
            return result

    def _thumbnail(self, person_id: int, face: Face) -> Path:
        assert face.aligned is not None
        self.thumbs.mkdir(parents=True, exist_ok=True)
        writer = ArchiveWriter(self.thumbs)
        writer.write(
            "thumbnail",
            f"person-{person_id}.jpg",
            encode_image(thumbnail(face.aligned.crop, THUMB_SIDE), "jpg"),
        )
        return self.thumbs / f"person-{person_id}.jpg"

    def list(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            people = (
                s.execute(select(PersonRow).order_by(PersonRow.face_count.desc(), PersonRow.id))
                .scalars()
                .all()
            )
            photos: dict[int, list[str]] = {}
            for person_id, path in s.execute(
                select(FaceRow.person_id, func.coalesce(Job.audit_path, Job.path))
                .join(Job, Job.id == FaceRow.job_id)
                .distinct()
                .order_by(FaceRow.person_id, func.coalesce(Job.audit_path, Job.path))
            ):
                photos.setdefault(person_id, []).append(path.removesuffix(".audit.json"))
            return [
                {
                    "person_id": p.id,
                    "name": p.name,
                    "prompt": p.prompt,
                    "faces": p.face_count,
                    "thumbnail": p.thumbnail,
                    "photos": photos.get(p.id, []),
                }
                for p in people
            ]

    def update(self, person_id: int, **values: str | None) -> bool:
        with self.sessions.begin() as s:
            row = s.get(PersonRow, person_id)
            if row is None:
                return False
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
            return True
