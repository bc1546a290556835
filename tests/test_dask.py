"""--dask: a 2-worker LocalCluster (worker processes) gives the same bytes and scores as one process.

One cluster serves the whole module (starting one takes seconds); the CLI reaches it by its
scheduler address, the way ``--dask ADDRESS`` is used on a real cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from challenge.keystream import parse_seed
from challenge.params import Params
from commands.main import main
from generator.distributed import on_cluster, task_rows, zarr_span
from generator.release import generate
from tests.helpers import SEED, TINY, resized
from tests.test_reproduce import KNOWN, KNOWN_GREY, digests

distributed = pytest.importorskip("distributed")

# 4500 encryptions: two tasks (4096 rows, the key store's sign-row chunk, and the rest)
TWO_TASKS = Params(n_private=100, per_image=45)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  env={"NUMBA_NUM_THREADS": "1"}) as cluster, distributed.Client(cluster) as client:
        yield client


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tasks_cover_whole_sign_chunks_and_the_zarr_chunks_that_begin_in_them():
    assert [task_rows(chunk, 4096) for chunk in (4096, 1000, 5000)] == [4096, 4096, 8192]
    assert task_rows(100, 4500) == 4500  # fewer rows than one sign chunk: one task
    assert zarr_span(0, 4096, 1024, 10_000) == (0, 4096)
    assert zarr_span(0, 4096, 873, 10_000) == (0, 4365)  # chunk 4 (3492 ..) straddles: the first task's
    assert zarr_span(4096, 8192, 873, 10_000) == (4365, 8730)
    assert zarr_span(8192, 10_000, 873, 10_000) == (8730, 10_000)


@pytest.mark.parametrize("args", [
    ["--mode", "cross", "--chunk", "1000"],  # tasks encode in blocks smaller than themselves
    ["--mode", "mixup", "--formats", "npy"],  # no sign rows stored (all zero), no public.zarr
])
def test_generate_on_the_cluster_writes_the_bytes_of_one_process(tmp_path, client, args):
    common = ["generate", "--seed", "7", "--practice", "--n-private", "100", "--per-image", "45", *args]
    assert main([*common, "--out", str(tmp_path / "here")]) == 0
    assert main([*common, "--out", str(tmp_path / "there"), "--dask", client.scheduler.address]) == 0
    here, there = tree_bytes(tmp_path / "here"), tree_bytes(tmp_path / "there")
    assert list(here) == list(there) and all(here[name] == there[name] for name in here)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no build folder or lock left


@pytest.mark.parametrize("version, shape, known", [
    (3, None, KNOWN[3]), (2, None, KNOWN[2]), (1, None, KNOWN[1]), (3, (28, 28, 1), KNOWN_GREY)])
def test_generate_on_the_cluster_writes_the_pinned_known_answers(tmp_path, client, private_set, public_bank,
                                                                  version, shape, known):
    """The practice release "kat" written by the cluster: the digests tests/test_reproduce.py pins for one process."""
    sets = [private_set, public_bank] if shape is None else [resized(s, shape) for s in (private_set, public_bank)]
    out = tmp_path / "kat"
    generate(out, TINY, parse_seed("kat", practice=True), *sets, practice=True, format_version=version,
             write_elsewhere=on_cluster(client))
    assert digests(out) == known


# grey; sign rows with pad bits; public.zarr chunks of 873 rows, one across the two tasks' rows
@pytest.mark.parametrize("shape", [(28, 28, 1), (9, 11, 3), (40, 40, 3)])
def test_generate_on_the_cluster_at_another_shape_writes_the_bytes_of_one_process(tmp_path, client, private_set,
                                                                                  public_bank, shape):
    sets = [resized(s, shape) for s in (private_set, public_bank)]
    generate(tmp_path / "here", TWO_TASKS, SEED, *sets, chunk=1000)
    generate(tmp_path / "there", TWO_TASKS, SEED, *sets, chunk=1000, write_elsewhere=on_cluster(client))
    here, there = tree_bytes(tmp_path / "here"), tree_bytes(tmp_path / "there")
    assert list(here) == list(there) and all(here[name] == there[name] for name in here)


def test_dask_without_dask_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["generate", "--out", str(tmp_path / "r"), "--dask", "local:2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'instahide-challenge[dask]'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("spec", ["local:0", "local:x", "", "local:100000"])
def test_bad_dask_spec_is_a_usage_error(spec, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--out", "r", "--dask", spec])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


# --- scoring: verify, leaderboard -------------------------------------------------------------

ROWS = 32  # 100 encryptions: four tasks, the last one short


@pytest.fixture(scope="module")
def submissions(tiny_release, tmp_path_factory):
    """blind and noise baselines, and a float submission with NaN and out-of-range values in two blocks."""
    from challenge.submission import open_for_scoring
    from verifier.baselines import write_baseline

    root = tmp_path_factory.mktemp("subs")
    expected, store = open_for_scoring(tiny_release / "public", tiny_release / "secret" / "keys.zarr")
    for kind in ("blind", "noise"):
        write_baseline(kind, root / kind, expected, store=store, release=tiny_release)
    bad = np.load(root / "blind" / "decryption.npy").astype(np.float64)
    bad[40, 1, 2, 0], bad[70, 0, 0, :] = np.nan, [0.5, 3.0, -7.0]
    (root / "bad").mkdir()
    np.save(root / "bad" / "decryption.npy", bad)
    return root


@pytest.mark.parametrize("kind", ["blind", "noise", "bad"])
@pytest.mark.parametrize("holdout", [None, 0.5])
def test_scores_on_the_cluster_are_those_of_one_process(tiny_release, submissions, client, kind, holdout):
    from challenge.submission import open_for_scoring
    from verifier.distributed import score_on_cluster
    from verifier.scoring import score, selected_rows

    expected, store = open_for_scoring(tiny_release / "public", tiny_release / "secret" / "keys.zarr")
    selected = selected_rows(store, holdout)
    here = score(submissions / kind, store, expected=expected, rows=ROWS, selected=selected)
    there = score_on_cluster(client, submissions / kind, store, expected, rows=ROWS, selected=selected)
    assert here[0].problems == there[0].problems and (here[1] is None) == (kind == "bad") == (there[1] is None)
    if here[1] is not None:
        assert here[1].summary == there[1].summary  # floats compared exactly
        for name in ("encryptions", "max_ssim", "best_column", "best_per_private"):
            assert np.array_equal(getattr(here[1], name), getattr(there[1], name), equal_nan=True), name


def test_verify_and_leaderboard_with_dask_print_what_they_print_without(tiny_release, submissions, client, capsys,
                                                                         tmp_path):
    from commands.verify import main as verify_main

    keys, release = str(tiny_release / "secret" / "keys.zarr"), str(tiny_release)
    outputs = []
    for dask in ([], ["--dask", client.scheduler.address]):
        verify_main([str(submissions / "blind"), "--keys", keys, "--release", release, "--json", "--rows", str(ROWS),
                     "--out", str(tmp_path / "scores"), *dask])
        main(["leaderboard", *(str(submissions / k) for k in ("blind", "noise", "bad")), "--keys", keys,
              "--release", release, "--json", "--rows", str(ROWS), "--out", str(tmp_path / "board"), *dask])
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and '"Max_SSIM"' in outputs[0]


# --- patches ----------------------------------------------------------------------------------

def test_patch_bank_on_the_cluster_is_the_bank_of_one_process_and_resumes(tmp_path, client):
    from generator.patches import build_patch_bank
    from tests.test_patches import SEED as BANK_SEED, Stop, make_public, store_bytes

    make_public(tmp_path / "pub")
    kw = dict(seed=BANK_SEED, crops_per_image=3, min_keypoints=3, batch_files=4, chunk_files=2)
    build_patch_bank(tmp_path / "pub", tmp_path / "whole", workers=1, **kw)
    on_cluster = dict(kw, executor=client.get_executor(pure=False), workers=2)

    def stop_after_two(done, total, patches):
        if done >= 8:
            raise Stop

    with pytest.raises(Stop):
        build_patch_bank(tmp_path / "pub", tmp_path / "cut", progress=stop_after_two, **on_cluster)
    resumed = build_patch_bank(tmp_path / "pub", tmp_path / "cut", **on_cluster)
    assert resumed.resumed_from_file == 8 and store_bytes(tmp_path / "whole") == store_bytes(tmp_path / "cut")


# --- audit ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def damaged_release(tiny_release, tmp_path_factory):
    """The tiny release with encryption rows 3 and 70 and the lambdas of row 40 changed: findings in three chunks."""
    import shutil

    import zarr

    release = shutil.copytree(tiny_release, tmp_path_factory.mktemp("damaged") / "release")
    encryptions = np.load(release / "public" / "encryption.npy")
    encryptions[3, 0, 0, 0] += 0.25
    encryptions[70] = -encryptions[70]
    np.save(release / "public" / "encryption.npy", encryptions)
    lam = zarr.open_array(str(release / "secret" / "keys.zarr" / "encryption" / "lam"), mode="r+")
    lam[40] = [0.7, 0.06, 0.06, 0.06, 0.06, 0.06]
    return release


@pytest.mark.parametrize("damaged", [False, True])
def test_audit_on_the_cluster_reports_what_one_process_reports(tiny_release, damaged_release, client, damaged,
                                                               capsys):
    from verifier.audit import audit
    from verifier.distributed import audit_on_cluster

    release = damaged_release if damaged else tiny_release
    keys = release / "secret" / "keys.zarr"
    here = audit(release, keys, chunk=ROWS)
    there = audit(release, keys, chunk=ROWS, run_chunks=audit_on_cluster(client))
    assert there.to_json() == here.to_json() and here.sound is not damaged
    if damaged:
        assert {f.check for f in here.findings} >= {"digests", "commitment", "seed_keys", "lambda", "encryptions"}
        assert [f.where for f in here.findings if f.check == "encryptions"] == ["row 3 (+2 more)"]
    outputs = []
    for dask in ([], ["--dask", client.scheduler.address]):
        for json_flag in ([], ["--json"]):
            assert main(["audit", str(release), "--chunk", str(ROWS), *json_flag, *dask]) == (3 if damaged else 0)
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
