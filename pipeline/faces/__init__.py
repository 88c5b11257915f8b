"""Faces: detection, alignment, identity, soft matte and paste-back, people across the album.

Pure functions over images (the daemon and DB are not known here). Per print::

    faces, record = find_faces(image, params)            # detect, align, embed, matte
    crops = {f.index: f.aligned.crop for f in faces if f.restorable}   # -> GPU batch (512x512)
    image, paste_record = paste_faces(image, faces, restored_crops, params)
    audit = [face_record(f) for f in faces]

Across the album: ``assign_people(people, embeddings, face_keys, photo_keys)``.
The identity guard: ``identity_distance(face.embedding, embed_aligned_crop(restored_crop))``.
"""

from __future__ import annotations

from .align import AlignedFace, align_face, template
from .core import Face, face_from_landmarks, face_record, find_faces, photo_matte
from .identity import SAME_PERSON_DISTANCE, embed_aligned_crop, identity_distance, same_person
from .matte import face_matte, guided_filter
from .params import AlignParams, DetectParams, FacesParams, MatteParams, PasteParams
from .paste import boundary_band, gradient_energy, match_colour, paste_faces, paste_feathered_box, seam_energy
from .people import Assignment, Person, assign_people

__all__ = [
    "SAME_PERSON_DISTANCE",
    "AlignParams",
    "AlignedFace",
    "Assignment",
    "DetectParams",
    "Face",
    "FacesParams",
    "MatteParams",
    "PasteParams",
    "Person",
    "align_face",
    "assign_people",
    "boundary_band",
    "embed_aligned_crop",
    "face_from_landmarks",
    "face_matte",
    "face_record",
    "find_faces",
    "gradient_energy",
    "guided_filter",
    "identity_distance",
    "match_colour",
    "paste_faces",
    "paste_feathered_box",
    "photo_matte",
    "same_person",
    "seam_energy",
    "template",
]
