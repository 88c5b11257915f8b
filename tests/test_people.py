"""People across the archive: the same person in two photos is one person; a user names them and gives
them a prompt, which later restorations use."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from albumd.daemon import db
from albumd.daemon.people import PeopleStore
from albumd.pipeline.faces import Face
from conftest import albumd, write_config
from PIL import Image


def test_people_are_clustered_across_photos_named_and_prompted(
    folders: dict[str, Path], photos_dir: Path
) -> None:
    src = Image.open(photos_dir / "pair_a.png").convert("RGB")
    w, h = src.size
    (folders["inbox"] / "Wedding").mkdir()
    src.save(folders["inbox"] / "Wedding" / "couple.png")
    # the same two people on another print: a different crop and scan, so a different file
    buf = io.BytesIO()
    src.crop((w // 20, h // 20, w - w // 30, h - h // 25)).save(buf, format="JPEG", quality=90)
    (folders["inbox"] / "Wedding" / "couple again.jpg").write_bytes(buf.getvalue())
    config = write_config(folders)
    r = albumd(config, "run", "--once")
    assert r.returncode == 0, r.stdout + r.stderr
    people = json.loads(albumd(config, "people", "--json").stdout)
    assert len(people) == 2, people  # two people, each seen twice, never merged into one
    for p in people:
        assert p["faces"] == 2
        assert sorted(p["photos"]) == ["Wedding/couple", "Wedding/couple again"]
        assert Path(p["thumbnail"]).is_file()
    audit = json.loads((folders["archive"] / "Wedding" / "couple.audit.json").read_text())
    assert sorted(f["person_id"] for f in audit["faces"]) == sorted(p["person_id"] for p in people)
    pid = people[0]["person_id"]
    assert albumd(config, "people", "name", str(pid), "Grandma Rose").returncode == 0
    r = albumd(config, "people", "prompt", str(pid), "elderly woman, grey curly hair")
    assert r.returncode == 0
    listed = albumd(config, "people", env={"COLUMNS": "250"})
    assert "Grandma Rose" in listed.stdout and "grey curly hair" in listed.stdout
    assert albumd(config, "people", "name", "999", "Nobody").returncode == 1
    # the prompt is found for a face of that person (the restoration uses this lookup)
    engine = db.make_engine(f"sqlite:///{folders['state'] / 'albumd.db'}")
    store = PeopleStore(db.make_sessionmaker(engine), folders["state"] / "people")
    face_of = {p["person_id"]: p for p in people}
    lookup = store.prompt_for()
    from albumd.daemon.models import FaceRow
    from sqlalchemy import select

    with store.sessions() as s:
        rows = s.execute(select(FaceRow)).scalars().all()
    for row in rows:
        face = Face(
            0,
            [0, 0, 1, 1],
            np.zeros((5, 2)),
            "given",
            1.0,
            100,
            True,
            "",
            embedding=np.array(json.loads(row.embedding)),
        )
        expected = "elderly woman, grey curly hair" if row.person_id == pid else None
        assert lookup(face) == expected, (row.person_id, face_of)
    # a re-run of the same job does not add its faces twice
    first = rows[0]
    again = store.record(first.job_id, [])
    assert again == {}
    with store.sessions() as s:
        assert len(s.execute(select(FaceRow)).scalars().all()) == 4
    engine.dispose()
