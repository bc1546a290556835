"""An image folder with one subfolder per class (torchvision ``ImageFolder`` / ImageNet layout);
classes are the sorted subfolder names.  The rules change pixels, so they are written down here:

* Files: recursive walk of each class folder, sorted by relative POSIX path; hidden entries
  (name starting with ".") are ignored; symlinked *directories* are never followed (so symlink
  loops cannot hang the walk) and are counted in ``notes["skipped_symlinked_dirs"]``; only files
  with an extension in :data:`generator.images.IMAGE_EXTENSIONS` are read, others are counted in
  ``notes["ignored_non_image_files"]``.  Multi-frame files give their first frame; EXIF
  orientation is ignored (pixels as stored), as torchvision does.  Symlinked files are read;
  files directly in the top folder are ignored (``notes["ignored_top_level_files"]``).
* Conversion to 8-bit RGB (:func:`generator.images.to_8bit`; to 8-bit grey with ``grey``, Pillow's
  "L", ITU-R 601-2 luma: 299 R + 587 G + 114 B over 1000, where an RGB file counts as
  ``converted_RGB``), counted as ``notes["converted_<MODE>"]``: 16-bit/32-bit integer grey
  (``I;16*``, ``I``) -> clip to 0..65535, then ``round(v / 257)``; everything else through
  Pillow's ``convert("RGB")`` (grey is replicated, palettes expanded, CMYK converted, alpha
  dropped as torchvision does; ``F`` is clipped to 0..255 by Pillow).  A folder of grey photos
  loads as RGB with three equal channels unless ``grey`` is asked for, so the same folder never
  changes shape by what happens to be in it.
* Resize: images already S x S (S = ``size``, 32 by default) are kept as they are; others are
  resized so the short side is S (long side ``long * S / short`` rounded half up) with Pillow
  LANCZOS, then centre-cropped to S x S (offset ``(resized side - S) // 2``).
* Decoding runs in ``workers`` processes (default: one per CPU; a folder of fewer than
  :data:`PARALLEL_FROM` files is decoded in this process) with a progress bar on a terminal's
  stderr; files are decoded in chunks taken back in order, so the set is the same bytes in the
  same order whatever the worker count.
* Oversized images are skipped before decoding and counted in ``notes["skipped_oversized"]``:
  more than :data:`generator.images.MAX_IMAGE_PIXELS` pixels, or a long side more than
  :data:`generator.images.MAX_ASPECT_RATIO` times the short one (a 1.2 KB PNG of 1 x 200,000 px
  would otherwise be upscaled to 32 x 6,400,000).  Entries that cannot be examined (a symlink
  loop, a link into an unreadable place) are counted in ``notes["skipped_unreadable_entries"]``;
  FIFOs, devices and sockets, or links to them, in ``notes["ignored_not_regular"]``, and an image
  is opened only if it is a regular file at the moment it is read.
* Unreadable files (corrupt, truncated, unknown format) are skipped and counted in
  ``notes["skipped_unreadable"]``; the private set must stay usable when one file of 50,000 is
  damaged, and the count is reported in summaries.  A class folder with no image file, or with
  none readable, is an error naming the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from challenge.imageset import ImageSet
from challenge.progress import Progress
from generator.images import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    ImageTooLarge,
    SourceError,
    count_note,
    read_image8,
    resize_center_crop,
    walk_image_files,
)
from generator.workers import WorkerDied, default_workers, in_order, start_pool

PARALLEL_FROM = 256  # image files from which a folder is decoded by worker processes
FOLDER_CHUNK = 32  # image files a worker decodes at a time


def load_folder(root: Path, size: int, grey: bool, workers: int | None) -> ImageSet:
    notes: dict[str, int] = {}
    classes = []
    for e in sorted(os.scandir(root), key=lambda e: e.name):
        if e.name.startswith("."):
            continue
        if e.is_dir(follow_symlinks=False):
            classes.append(e.name)
        elif e.is_symlink() and os.path.isdir(e.path):
            count_note(notes, "skipped_symlinked_dirs")
        else:
            count_note(notes, "ignored_top_level_files")
    if not classes:
        raise SourceError(f"{root}: image folder: expected one subfolder per class, found none")
    files, labels = [], []
    for label, cls in enumerate(classes):
        rels = walk_image_files(root / cls, notes)
        if not rels:
            raise SourceError(f"{root / cls}: class folder '{cls}' has no image files "
                              f"(extensions read: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += [f"{cls}/{rel}" for rel in rels]
        labels += [label] * len(rels)
    images = np.empty((len(files), size, size, 1 if grey else 3), np.uint8)
    kept = np.zeros(len(files), bool)
    workers = default_workers() if workers is None else workers
    pool = None
    if workers > 1 and len(files) >= PARALLEL_FROM:
        pool = start_pool(workers, preload=__name__)
    tasks = ((str(root), files[i : i + FOLDER_CHUNK], size, grey) for i in range(0, len(files), FOLDER_CHUNK))
    try:
        with Progress("load", len(files), unit="files") as bar:
            at = 0
            for (_, chunk, *_), (arrays, ok, chunk_notes) in in_order(pool, _decode_files, tasks):
                images[at : at + len(chunk)][ok] = arrays
                kept[at : at + len(chunk)] = ok
                for k, v in chunk_notes.items():
                    count_note(notes, k, v)
                at += len(chunk)
                bar.advance(len(chunk))
    except WorkerDied as e:
        raise SourceError(f"{root}: a worker process died while decoding {e.task[1][0]} .. {e.task[1][-1]}; "
                          "re-run with one worker to find the file") from None
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    labels = np.asarray(labels, np.int64)
    for label, cls in enumerate(classes):
        if not kept[labels == label].any():
            raise SourceError(f"{root / cls}: class folder '{cls}' has no readable image "
                              f"({int((labels == label).sum())} file(s), all corrupt or truncated)")
    n = int(kept.sum())
    origin = np.stack([np.arange(n, dtype=np.int64), np.zeros(n, np.int64)], axis=1)
    images = images if n == len(files) else images[kept]  # no second copy when every file was read
    return ImageSet(images, labels=labels[kept], class_names=tuple(classes),
                    source_files=tuple(f for f, k in zip(files, kept) if k), origin=origin, notes=notes)


def _decode_files(root: str, rels: list[str], size: int, grey: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode a few image files by the folder rule; runs in a worker process.  Returns the images
    decoded, which of ``rels`` they are, and the notes (skipped, converted)."""
    notes: dict[str, int] = {}
    arrays, ok = [], np.zeros(len(rels), bool)
    for i, rel in enumerate(rels):
        try:
            im, converted = read_image8(os.path.join(root, rel), grey)
            arrays.append(resize_center_crop(im, size))
        except ImageTooLarge:
            count_note(notes, "skipped_oversized")
            continue
        except DECODE_ERRORS:
            count_note(notes, "skipped_unreadable")
            continue
        if converted:
            count_note(notes, f"converted_{converted}")
        ok[i] = True
    out = np.stack(arrays) if arrays else np.zeros((0, size, size, 1 if grey else 3), np.uint8)
    return out, ok, notes
