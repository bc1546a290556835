"""Patch bank: crops, the flat-patch filter, determinism across workers, resume, bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import generator.patches as gp
from generator.patches import (
    build_patch_bank,
    count_keypoints,
    crop_positions,
    load_patch_bank,
    load_resized,
)
from generator.sources import SourceError
from tests.helpers import extra_module

SEED = b"test-seed-0123456789"


def natural_image(rng, w, h):
    """Smooth colour noise plus a few shapes: textured in places, flat in others."""
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    d = ImageDraw.Draw(im)
    for _ in range(12):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(3, 40))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    a = np.asarray(im).astype(np.int16) + rng.integers(-25, 26, (h, w, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_public(root: Path, n=14, seed=0) -> dict[str, str]:
    """ImageNet-like folder; returns {relative path: what it is} for the odd files."""
    rng = np.random.default_rng(seed)
    for c in ("n01", "n02"):
        (root / c).mkdir(parents=True)
    for i in range(n):
        w, h = int(rng.integers(90, 200)), int(rng.integers(80, 180))
        natural_image(rng, w, h).save(root / f"n0{1 + i % 2}" / f"img_{i:03d}.JPEG", quality=90)
    odd = {}
    natural_image(rng, 120, 100).convert("L").save(root / "n01" / "grey.JPEG")
    odd["n01/grey.JPEG"] = "grey"
    g16 = (np.asarray(natural_image(rng, 100, 90).convert("L")).astype(np.uint16) * 257)
    Image.fromarray(g16).save(root / "n02" / "deep.png")
    odd["n02/deep.png"] = "16-bit"
    data = (root / "n01" / "img_000.JPEG").read_bytes()
    (root / "n01" / "trunc.JPEG").write_bytes(data[: len(data) // 3])
    odd["n01/trunc.JPEG"] = "truncated"
    (root / "n02" / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    odd["n02/corrupt.JPEG"] = "corrupt"
    os.symlink("..", root / "n02" / "loop")  # must not be followed
    return odd


def store_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- filter


def test_filter_keeps_texture_drops_flat():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:32, 0:32]
    flat = [
        np.full((32, 32, 3), 128, np.uint8),
        np.full((32, 32, 3), (10, 200, 60), np.uint8),
        np.stack([xx * 8, xx * 8, xx * 8], -1).astype(np.uint8),  # horizontal ramp
        np.stack([(xx + yy) * 4, 255 - (xx + yy) * 4, yy * 8], -1).astype(np.uint8),  # diagonal
        np.clip(128 + 40 * np.sin(xx / 10.0)[..., None] * np.ones(3), 0, 255).astype(np.uint8),  # slow wave
    ]
    discs = Image.new("RGB", (32, 32), (120, 120, 120))
    d = ImageDraw.Draw(discs)
    for _ in range(40):
        x, y, r = int(rng.integers(0, 32)), int(rng.integers(0, 32)), int(rng.integers(1, 4))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    textured = [
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8).repeat(2, 0).repeat(2, 1),
        np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((32, 32), Image.BICUBIC)),
        np.asarray(discs),
        (((xx // 3 + yy // 3) % 2) * 128 + rng.integers(0, 60, (32, 32)))[..., None].repeat(3, -1).astype(np.uint8),
    ]
    # single-pixel noise is finer than SIFT's finest scale: like SIFT, the detector barely sees it
    assert count_keypoints(rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))[0] <= gp.DEFAULT_MIN_KEYPOINTS
    cf = count_keypoints(np.stack(flat))
    ct = count_keypoints(np.stack(textured))
    assert cf.max() <= 1, cf
    assert ct.min() > gp.DEFAULT_MIN_KEYPOINTS, ct
    assert (cf <= gp.DEFAULT_MIN_KEYPOINTS).all()


def test_counts_track_scikit_image_sift():
    """Same detector family as SIFT: counts on natural patches correlate with skimage's SIFT."""
    skf = extra_module("skimage.feature")
    from skimage import data
    from skimage.color import rgb2gray

    rng = np.random.default_rng(0)
    pats = []
    for a in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket()):
        im = Image.fromarray(a)
        w, h = im.size
        r = np.asarray(im.resize((round(w * 40 / min(w, h)), round(h * 40 / min(w, h))), Image.LANCZOS))
        for _ in range(12):
            y, x = rng.integers(0, r.shape[0] - 31), rng.integers(0, r.shape[1] - 31)
            pats.append(r[y:y + 32, x:x + 32])
    mine = count_keypoints(np.stack(pats))
    ref = []
    for p in pats:
        s = skf.SIFT()
        try:
            s.detect(rgb2gray(p))
            ref.append(len(s.keypoints))
        except RuntimeError:  # skimage raises when it finds no keypoint at all
            ref.append(0)
    assert np.corrcoef(mine, ref)[0, 1] > 0.9


# ---------------------------------------------------------------- crops


def test_crop_positions_deterministic_distinct_inside():
    a = crop_positions(SEED, "n01/x.JPEG", width=53, height=40, k=5)
    assert a == crop_positions(SEED, "n01/x.JPEG", width=53, height=40, k=5)
    assert a != crop_positions(b"other", "n01/x.JPEG", width=53, height=40, k=5)
    assert len(set(a)) == 5 and all(0 <= x <= 21 and 0 <= y <= 8 for x, y in a)
    assert sorted(crop_positions(SEED, "f", width=33, height=32, k=10)) == [(0, 0), (1, 0)]  # only 2 exist
    assert crop_positions(SEED, "f", width=31, height=40, k=3) == []


def test_bank_contents_and_bad_inputs(tmp_path):
    pub = tmp_path / "pub"
    odd = make_public(pub)
    seen = []
    s = build_patch_bank(pub, tmp_path / "bank", seed=SEED, crops_per_image=4, workers=1,
                         min_keypoints=3, progress=lambda *a: seen.append(a))
    bank = load_patch_bank(tmp_path / "bank")
    assert s.files == 18 and s.unreadable == 2 and s.patches == len(bank) > 10
    assert seen[-1] == (18, 18, s.patches)
    assert bank.origin_columns == ("file", "x0", "y0", "x1", "y1") and (bank.labels == -1).all()
    assert bank.notes["unreadable"] == 2 and bank.notes["skipped_symlinked_dirs"] == 1
    assert bank.notes["converted_L"] == 1 and bank.notes["converted_I;16"] == 1
    files = bank.source_files
    assert list(files) == sorted(files) and "n02/loop" not in "".join(files)
    unreadable = {files[i] for i in __import__("zarr").open_group(tmp_path / "bank")["unreadable"][:]}
    assert unreadable == {k for k, v in odd.items() if v in ("truncated", "corrupt")}
    assert {files[i] for i in bank.origin[:, 0]} >= {"n01/grey.JPEG", "n02/deep.png"} - set()  # converted ones used
    cache = {}
    for img, (f, x0, y0, x1, y1) in zip(bank.images, bank.origin):
        if f not in cache:
            cache[f] = load_resized(pub / files[f])[0]
        src = cache[f]
        assert min(src.shape[:2]) == 40
        assert x1 - x0 == 32 and y1 - y0 == 32 and 0 <= x0 and x1 <= src.shape[1] and 0 <= y0 and y1 <= src.shape[0]
        assert np.array_equal(img, src[y0:y1, x0:x1])  # reproducible from (file, crop box)
        assert (x0, y0) in crop_positions(SEED, files[f], width=src.shape[1], height=src.shape[0], k=4)
    assert (count_keypoints(bank.images) > 3).all()
    grey = files.index("n01/grey.JPEG")
    for img in bank.images[bank.origin[:, 0] == grey]:
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_same_bank_whatever_workers_and_batches(tmp_path):
    pub = tmp_path / "pub"
    make_public(pub)
    build_patch_bank(pub, tmp_path / "a", seed=SEED, crops_per_image=3, workers=1, min_keypoints=3)
    build_patch_bank(pub, tmp_path / "b", seed=SEED, crops_per_image=3, workers=2, min_keypoints=3,
                     batch_files=5, chunk_files=2)
    assert store_bytes(tmp_path / "a") == store_bytes(tmp_path / "b")
    build_patch_bank(pub, tmp_path / "c", seed=b"another seed", crops_per_image=3, workers=1, min_keypoints=3)
    assert not np.array_equal(load_patch_bank(tmp_path / "a").origin, load_patch_bank(tmp_path / "c").origin)


class Stop(Exception):
    pass


@pytest.mark.parametrize("workers", [1, 2])
def test_interrupted_run_resumes_to_same_bank(tmp_path, workers):
    pub = tmp_path / "pub"
    make_public(pub)
    kw = dict(seed=SEED, crops_per_image=3, min_keypoints=3, batch_files=4, chunk_files=2)
    build_patch_bank(pub, tmp_path / "whole", workers=1, **kw)

    def stop_after_two(done, total, patches):
        if done >= 8:
            raise Stop

    with pytest.raises(Stop):
        build_patch_bank(pub, tmp_path / "cut", workers=workers, progress=stop_after_two, **kw)
    with pytest.raises(SourceError, match="complete: the build stopped after 8 files"):
        load_patch_bank(tmp_path / "cut")
    s = build_patch_bank(pub, tmp_path / "cut", workers=workers, **kw)
    assert s.resumed_from_file == 8
    assert store_bytes(tmp_path / "whole") == store_bytes(tmp_path / "cut")
    again = build_patch_bank(pub, tmp_path / "cut", workers=workers, **kw)  # complete: nothing to do
    assert again.patches == s.patches and store_bytes(tmp_path / "whole") == store_bytes(tmp_path / "cut")


def test_crash_between_append_and_commit(tmp_path, monkeypatch):
    """Rows appended but not committed (crash mid-batch) are dropped on resume."""
    pub = tmp_path / "pub"
    make_public(pub)
    kw = dict(seed=SEED, crops_per_image=3, min_keypoints=3, batch_files=3, workers=1)
    build_patch_bank(pub, tmp_path / "whole", **kw)
    real, calls = gp._commit, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise Stop
        real(*a, **k)

    monkeypatch.setattr(gp, "_commit", flaky)
    with pytest.raises(Stop):
        build_patch_bank(pub, tmp_path / "cut", **kw)
    monkeypatch.setattr(gp, "_commit", real)
    build_patch_bank(pub, tmp_path / "cut", **kw)
    assert store_bytes(tmp_path / "whole") == store_bytes(tmp_path / "cut")


def test_resume_refuses_other_seed_or_files(tmp_path):
    pub = tmp_path / "pub"
    make_public(pub, n=4)
    build_patch_bank(pub, tmp_path / "bank", seed=SEED, workers=1, min_keypoints=3)
    with pytest.raises(SourceError, match="params: this bank was started with other parameters"):
        build_patch_bank(pub, tmp_path / "bank", seed=b"x", workers=1, min_keypoints=3)
    natural_image(np.random.default_rng(1), 100, 100).save(pub / "n01" / "new.JPEG")
    with pytest.raises(SourceError, match="files: the public folder's files differ"):
        build_patch_bank(pub, tmp_path / "bank", seed=SEED, workers=1, min_keypoints=3)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(SourceError, match="not a patch bank"):
        build_patch_bank(pub, tmp_path / "other", seed=SEED, workers=1)
    with pytest.raises(SourceError, match="no image files"):
        build_patch_bank(tmp_path / "other", tmp_path / "b2", seed=SEED, workers=1)
    with pytest.raises(SourceError, match="seed: expected non-empty bytes"):
        build_patch_bank(pub, tmp_path / "b3", seed="text", workers=1)


def test_non_utf8_file_name_round_trips(tmp_path):
    pub = tmp_path / "pub"
    (pub / "c").mkdir(parents=True)
    name = os.fsdecode(b"caf\xe9.JPEG")  # Latin-1 name: not valid UTF-8
    natural_image(np.random.default_rng(3), 120, 90).save(pub / "c" / name)
    build_patch_bank(pub, tmp_path / "bank", seed=SEED, workers=1, min_keypoints=0)
    bank = load_patch_bank(tmp_path / "bank")
    assert bank.source_files == (f"c/{name}",) and len(bank) == 2
    f, x0, y0, x1, y1 = bank.origin[0]
    assert np.array_equal(bank.images[0], load_resized(pub / bank.source_files[f])[0][y0:y1, x0:x1])


def test_load_public_bank_and_npz(tmp_path):
    from generator.sources import load_public

    pub = tmp_path / "pub"
    make_public(pub, n=4)
    build_patch_bank(pub, tmp_path / "bank", seed=SEED, workers=1, min_keypoints=3)
    assert load_public(tmp_path / "bank").fingerprint() == load_patch_bank(tmp_path / "bank").fingerprint()
    p = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "p.npz", patches=p)
    s = load_public(tmp_path / "p.npz")
    assert np.array_equal(s.images, p) and (s.labels == -1).all()
    np.savez(tmp_path / "q.npz", patches=p[..., :2])
    with pytest.raises(SourceError, match=r"q\.npz: patches: expected uint8 \(N, H, W, C\) with C = 1 or 3"):
        load_public(tmp_path / "q.npz")
    with pytest.raises(SourceError, match="not a patch bank"):
        load_public(pub)


def test_keypoint_counter_equals_its_plain_numpy_twin(public_bank):
    """The filter decides which patches a bank holds, so its counts are part of the bank's bytes."""
    from tests.naive import count_keypoints_reference

    rng = np.random.default_rng(0)
    patches = public_bank.images[rng.choice(len(public_bank), 44, replace=False)]
    flat = np.full((2, 32, 32, 3), 128, np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 32, 3))
    noisy = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    patches = np.concatenate([patches, flat, ramp[None], noisy])
    counts = count_keypoints(patches)
    assert counts.sum() > 0
    np.testing.assert_array_equal(counts, count_keypoints_reference(patches))
