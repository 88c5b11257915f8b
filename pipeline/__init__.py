"""albumd's restoration pipeline: pure functions over images, usable as a library on its own.

Images are numpy arrays (H, W, 3) of float32 in [0, 1], linear to the file's encoding. Every stage is a
function ``(image, params) -> (image, StageRecord)``; the record goes into the audit. This package knows
nothing about the daemon, the database or the inbox.
"""
