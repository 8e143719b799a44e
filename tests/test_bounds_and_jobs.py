"""A server several people can share: bounded work (checkpoints, archives, images, dot, caches), jobs that belong
to someone (a line, a cap per person, a grace period, stops, temporary files), and the shared mode's data roots."""

import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_viz import ResNetConfig, build_model, preset, trace
from resnet_viz.caches import SizedLRU, prune_least_recent
from resnet_viz.data import channel_stats, load_dataset
from resnet_viz.data import splits as splits_module
from resnet_viz.data.folders import MANIFEST, prune_cache
from resnet_viz.errors import CheckpointError, ConfigError, DataError, ExportError
from resnet_viz.jobs import BackgroundJob, JobManager, JobState, StudyJob
from resnet_viz.limits import Limits
from resnet_viz.server import ServerSettings
from resnet_viz.training import load_checkpoint
from resnet_viz.training.checkpoints import checkpoint_bytes
from resnet_viz.training.inflation import checkpoint_bytes_allowed
from resnet_viz.views.export import run_dot

TINY = ResNetConfig(name="tiny", widths=(8, 16), blocks=(1, 1), strides=(1, 2))


# -- checkpoints ------------------------------------------------------------------------------------


def saved(tmp_path: Path, extra: dict | None = None, name: str = "model.pt") -> Path:
    """A real checkpoint of TINY, with ``extra`` tensors in its state dict (saved as torch.save saves)."""
    content = torch.load(io.BytesIO(checkpoint_bytes(build_model(TINY), TINY, {"epochs": 1})), weights_only=True)
    content["state_dict"].update(extra or {})
    path = tmp_path / name
    torch.save(content, path)
    return path


def deflated(path: Path) -> Path:
    """The same zip archive with every entry deflated: what a bomb looks like."""
    out = path.with_name(f"deflated-{path.name}")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for entry in zin.infolist():
            zout.writestr(entry.filename, zin.read(entry.filename))
    return out


def test_a_real_checkpoint_loads_and_a_deflate_bomb_is_refused_before_it_inflates(tmp_path):
    model, config, meta = load_checkpoint(saved(tmp_path))
    assert config == TINY and meta == {"epochs": 1}
    bomb = deflated(saved(tmp_path, {"zeros": torch.zeros(2**24)}, "big.pt"))  # 64 MiB of zeros, ~65 KiB stored
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    with pytest.raises(CheckpointError, match=r"inflates [\d,]+-fold .*RESNET_VIZ_CHECKPOINT_RATIO"):
        load_checkpoint(bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 2**20  # the entry was never inflated


def test_a_checkpoint_holding_more_than_its_config_needs_is_refused(tmp_path):
    allowed = checkpoint_bytes_allowed(TINY)
    assert allowed == 3 * 4 * TINY.num_params() + 16 * 2**20
    stuffed = saved(tmp_path, {"extra": torch.ones(allowed // 4 + 1024)})  # stored, not compressed
    with pytest.raises(CheckpointError, match=r"its config \(tiny: .*\) needs at most"):
        load_checkpoint(stuffed)


def test_checkpoints_without_a_config_or_not_zip_files_are_refused_in_one_sentence(tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save({"state_dict": build_model(TINY).state_dict()}, plain)
    with pytest.raises(CheckpointError, match="no 'resnet-viz checkpoint 1' header"):
        load_checkpoint(plain)
    headed = tmp_path / "headed.pt"
    torch.save({"format": "resnet-viz checkpoint 1", "state_dict": build_model(TINY).state_dict()}, headed)
    with pytest.raises(CheckpointError, match="its record holds no config"):
        load_checkpoint(headed)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a zip archive"):
        load_checkpoint(text)
    lying = tmp_path / "lying.pt"
    content = torch.load(saved(tmp_path), weights_only=True)
    content["config"] = '{"widths": [0], "blocks": [1], "strides": [1]}'
    torch.save(content, lying)
    with pytest.raises(CheckpointError, match="cannot describe a network: stage 1: width"):
        load_checkpoint(lying)


# -- archives and image folders ---------------------------------------------------------------------

def image_archive(path: Path, classes=("cat", "dog"), per_class: int = 4, side: int = 8) -> Path:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for c in classes:
            for i in range(per_class):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buffer, "PNG")
                info = tarfile.TarInfo(f"pets/train/{c}/{i:03d}.png")
                info.size = len(buffer.getvalue())
                tar.addfile(info, io.BytesIO(buffer.getvalue()))
    return path


def zero_bomb(path: Path, size: int) -> Path:
    """A .tar.gz whose one file is ``size`` zero bytes: it compresses about 1000-fold."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("bomb/train/a/zeros.png")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def test_an_archive_bomb_is_refused_before_it_is_written_and_leaves_nothing(tmp_path):
    bomb = zero_bomb(tmp_path / "bomb.tar.gz", 64 * 2**20)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"would extract to more than .*RESNET_VIZ_ARCHIVE_RATIO"):
        load_dataset(bomb, cache_dir=tmp_path / "cache")
    archives = tmp_path / "cache" / "archives"
    assert not any(archives.iterdir())  # not the part-written folder either


def test_the_archive_bounds_come_from_the_environment(tmp_path, monkeypatch):
    archive = image_archive(tmp_path / "pets.tar.gz")
    monkeypatch.setenv("RESNET_VIZ_ARCHIVE_MEMBERS", "5")
    with pytest.raises(DataError, match=r"more than 5 files and folders, over the limit of 5 \(RESNET_VIZ_ARCH"):
        load_dataset(archive, cache_dir=tmp_path / "cache")
    monkeypatch.delenv("RESNET_VIZ_ARCHIVE_MEMBERS")
    monkeypatch.setenv("RESNET_VIZ_ARCHIVE_BYTES", "1000")
    with pytest.raises(DataError, match=r"over the limit of 1000 B \(RESNET_VIZ_ARCHIVE_BYTES\)"):
        load_dataset(archive, cache_dir=tmp_path / "cache")
    monkeypatch.setenv("RESNET_VIZ_ARCHIVE_BYTES", "lots")
    with pytest.raises(ConfigError, match="RESNET_VIZ_ARCHIVE_BYTES must be a number"):
        load_dataset(archive, cache_dir=tmp_path / "cache")


def test_a_class_folder_deleted_from_the_cache_is_extracted_again(tmp_path):
    archive = image_archive(tmp_path / "pets.tar.gz")
    cache = tmp_path / "cache"
    assert load_dataset(archive, cache_dir=cache).classes == ("cat", "dog")
    (extracted,) = (cache / "archives").iterdir()
    assert (extracted / MANIFEST).is_file()
    for image in (extracted / "pets" / "train" / "dog").iterdir():
        image.unlink()
    (extracted / "pets" / "train" / "dog").rmdir()
    data = load_dataset(archive, cache_dir=cache)
    assert data.classes == ("cat", "dog") and len(data.train) + len(data.val) == 8


def image_folder(root: Path, side: int, per_class: int = 2) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (side, side)).save(root / c / f"{i}.png")
    return root


def test_images_are_bounded_by_their_side_and_by_their_decoded_bytes(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"is 1100×1100 pixels, over the limit of 1,024 \(RESNET_VIZ_IMAGE_SIDE\)"):
        load_dataset(image_folder(tmp_path / "big", 1100), cache_dir=tmp_path / "cache")
    monkeypatch.setenv("RESNET_VIZ_DECODED_BYTES", str(3 * 64 * 64 * 3))  # three of the four images
    with pytest.raises(DataError, match=r"4 images of 64×64 pixels .* take 48.00 KiB decoded, over the limit of "
                                        r"36.00 KiB \(RESNET_VIZ_DECODED_BYTES\)"):
        load_dataset(image_folder(tmp_path / "small", 64), cache_dir=tmp_path / "cache")


def test_channel_statistics_work_in_chunks_of_bytes_and_match_a_direct_computation(monkeypatch):
    images = torch.randint(0, 256, (37, 3, 20, 24), dtype=torch.uint8)
    x = images.double().numpy() / 255
    expected = (x.mean((0, 2, 3)), x.std((0, 2, 3)))
    chunks = []
    real_split = torch.Tensor.split
    monkeypatch.setattr(torch.Tensor, "split", lambda self, n, *a: chunks.append(n) or real_split(self, n, *a))
    monkeypatch.setattr(splits_module, "STATS_CHUNK_BYTES", 8 * 3 * 20 * 24 * 5)  # five images of float64
    mean, std = channel_stats(images)
    assert chunks == [5]
    np.testing.assert_allclose(mean, expected[0], rtol=1e-9)
    np.testing.assert_allclose(std, expected[1], rtol=1e-9)


# -- caches -----------------------------------------------------------------------------------------

def test_the_memory_cache_keeps_a_byte_budget_least_recent_out():
    cache = SizedLRU(max_bytes=10, size=len)
    made = []
    for key in "abc":
        cache.get_or_make(key, lambda key=key: made.append(key) or key * 4)
    assert cache.bytes == 8 and "a" not in cache and len(cache) == 2  # a went to make room for c
    cache.get_or_make("b", lambda: made.append("b again"))  # a hit makes b the most recent
    cache.get_or_make("d", lambda: "dddd")
    assert "c" not in cache and "b" in cache and cache.bytes == 8
    assert cache.get_or_make("huge", lambda: "x" * 11) == "x" * 11 and "huge" not in cache
    assert made == ["a", "b", "c"]


@pytest.mark.parametrize("name", ["resnet56", "resnet50"])
def test_a_traces_size_estimate_is_near_what_it_takes(name):
    trace(preset(name))  # the weightless model it traces is kept apart, and first-use allocations are not the trace's
    tracemalloc.start()
    t = trace(preset(name))
    taken, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert taken / 2 < t.approx_bytes < taken * 2


def test_the_weightless_models_kept_for_tracing_are_bounded_in_bytes_and_near_their_size():
    from resnet_viz.tracing import tracer

    config = ResNetConfig(name="kept", widths=(8, 16), blocks=(20, 20), strides=(1, 2))
    tracemalloc.start()
    model = tracer._meta_model(config)
    taken, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert tracer._meta_model(config) is model and config in tracer._META_MODELS
    size = tracer.MODULE_BYTES * sum(1 for _ in model.modules())
    assert taken / 2 < size < taken * 2 and tracer._META_MODELS.bytes <= tracer._META_MODELS.max_bytes


def test_disk_caches_are_pruned_least_recently_used_first(tmp_path):
    def entries(folder: Path) -> list[Path]:
        folder.mkdir()
        made = []
        for i, name in enumerate(["old", "middle", "new"]):
            (folder / name).write_bytes(bytes(100))
            os.utime(folder / name, (1000 + i, 1000 + i))
            made.append(folder / name)
        return made

    old, middle, new = entries(tmp_path / "one")
    assert prune_least_recent([new, old, middle], limit=250) == [old]  # the oldest goes first, until the rest fit
    old, middle, new = entries(tmp_path / "two")
    assert prune_least_recent([new, old, middle], limit=150, keep=[old]) == [middle, new]
    assert [p.name for p in (tmp_path / "two").iterdir()] == ["old"]
    cache = tmp_path / "cache"
    for name, stamp in (("a.pt", 1), ("b.pt", 2)):
        (cache / "decoded").mkdir(parents=True, exist_ok=True)
        (cache / "decoded" / name).write_bytes(bytes(100))
        os.utime(cache / "decoded" / name, (stamp, stamp))
    assert prune_cache(cache, limit=100) == [cache / "decoded" / "a.pt"]


# -- dot --------------------------------------------------------------------------------------------

HARD_GRAPH = "digraph { " + " ".join(f"n{i} -> n{j};" for i in range(120) for j in range(i + 1, 120)) + " }"


@pytest.mark.skipif(not Path("/usr/bin/dot").exists(), reason="needs Graphviz's dot")
def test_dot_has_a_time_limit_named_in_the_error(monkeypatch):
    monkeypatch.setenv("RESNET_VIZ_DOT_SECONDS", "0.2")
    with pytest.raises(ExportError, match=r"more than 0.2 s .* the limit of 0.2 \(RESNET_VIZ_DOT_SECONDS\)"):
        run_dot(HARD_GRAPH, "svg")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/usr/bin/dot").exists(),
                    reason="needs Linux and Graphviz's dot")
def test_dot_dies_with_the_process_that_started_it():
    code = f"from resnet_viz.views.export import run_dot; run_dot({HARD_GRAPH!r}, 'svg')"
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 60
        while not (dots := children(parent.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dots, "dot never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{dots[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{dots[0]}").exists()
    finally:
        parent.kill()


# -- jobs -------------------------------------------------------------------------------------------

class Waiting(BackgroundJob):
    """A job that runs until it is released or stopped."""

    def __init__(self, fail: bool = False):
        super().__init__(JobState())
        self.release, self.fail = threading.Event(), fail

    def work(self):
        while not self.release.wait(0.01):
            if self.stop_requested():
                return {"message": "stopped early"}
        if self.fail:
            raise RuntimeError("boom")
        return {}


def wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_manager_runs_a_few_jobs_at_once_and_the_rest_wait_in_line():
    jobs = JobManager(max_running=2, per_owner=2)
    a, b, c, d = (Waiting() for _ in range(4))
    for owner, job in zip(["ann", "bob", "cat", "dan"], (a, b, c, d)):
        jobs.submit(owner, "training", job)
    assert a.running() and b.running() and not c.running()
    assert (jobs.place(a), jobs.place(c), jobs.place(d)) == (None, 1, 2)
    assert jobs.status_line(d) == "waiting: 2nd in line, behind 2 running jobs" and jobs.status_line(a) == "running"
    assert c.snapshot().status == "queued"
    a.release.set()
    wait_for(lambda: c.running())
    assert jobs.place(d) == 1 and a.snapshot().status == "finished"
    jobs.stop(d)  # out of line, never run
    assert d.snapshot().status == "stopped" and jobs.place(d) is None and not d.running()
    b.release.set()
    c.release.set()
    wait_for(lambda: not jobs.running())


def test_one_owner_may_have_only_so_many_jobs_and_finds_them_again():
    jobs = JobManager(max_running=4, per_owner=1)
    first = jobs.submit("ann", "training", Waiting())
    with pytest.raises(ConfigError, match="you already have 1 job waiting or running"):
        jobs.submit("ann", "quantization", Waiting())
    assert jobs.find("ann", "training") is first  # a reloaded page, the same cookie
    assert jobs.find("bob", "training") is None and jobs.find("ann", "quantization") is None
    first.release.set()
    wait_for(first.ended)
    jobs.submit("ann", "quantization", Waiting()).release.set()


def test_a_job_is_stopped_once_its_owner_has_been_gone_for_the_grace_period():
    now = [0.0]
    jobs = JobManager(max_running=2, grace=60, clock=lambda: now[0])
    kept, left = Waiting(), Waiting()
    jobs.submit("here", "training", kept)
    jobs.submit("gone", "training", left)
    now[0] = 50
    jobs.seen("here")
    assert jobs.sweep() == []
    now[0] = 100  # "gone" last seen at 0, "here" at 50
    assert jobs.sweep() == [left]
    wait_for(left.ended)
    assert left.snapshot().message == "stopped early" and kept.running()
    kept.release.set()


def test_temporary_files_go_when_a_job_ends_however_it_ends(tmp_path):
    jobs = JobManager(max_running=1)
    folders = [tmp_path / name for name in ("ok", "failed", "cancelled")]
    for folder in folders:
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"x")
    ok, failed, cancelled = Waiting(), Waiting(fail=True), Waiting()
    for job, folder in zip((ok, failed, cancelled), folders):
        job.temporary.append(folder)
        jobs.submit(str(folder), "q", job)
    jobs.stop(cancelled)
    ok.release.set()
    wait_for(failed.running)
    failed.release.set()
    wait_for(failed.ended)
    assert failed.snapshot().status == "failed" and "boom" in failed.snapshot().message
    assert not any(folder.exists() for folder in folders)


def test_a_study_stops_at_its_next_progress_report():
    reports = []

    def study(progress):
        for i in range(10_000):
            progress(i, 10_000)
            reports.append(i)
            time.sleep(0.001)
        return "done"

    job = JobManager().submit("ann", "quantization", StudyJob(study))
    wait_for(lambda: len(reports) > 5)
    job.stop()
    wait_for(job.ended)
    assert job.snapshot().status == "stopped" and len(reports) < 10_000 and job.snapshot().report is None


# -- the shared mode --------------------------------------------------------------------------------

def test_the_shared_mode_reads_data_only_under_its_roots_and_tells_nothing_of_other_paths(tmp_path):
    root = tmp_path / "data"
    (root / "cifar").mkdir(parents=True)
    (tmp_path / "secret" / "keys").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path / "secret")
    shared = ServerSettings.from_env({"RESNET_VIZ_SHARED": "1", "RESNET_VIZ_DATA_ROOTS": str(root)})
    assert shared.shared and shared.max_jobs == 1 and shared.jobs_per_session == 1
    assert shared.data_path(f" {root}/cifar ") == str((root / "cifar").resolve())
    sentences = set()
    for path in (tmp_path / "secret", tmp_path / "nothing-here", root / "escape", f"{root}/../secret", "cifar"):
        with pytest.raises(DataError) as refused:
            shared.data_path(str(path))
        sentences.add(str(refused.value))
    assert len(sentences) == 1 and str(root) in sentences.pop()  # the same words whether a path exists or not
    with pytest.raises(DataError, match="reads no data folders"):
        ServerSettings.from_env({"RESNET_VIZ_SHARED": "yes"}).data_path("/anything")
    alone = ServerSettings.from_env({})
    assert not alone.shared and alone.data_path("/anything") == "/anything"
    with pytest.raises(ConfigError, match="RESNET_VIZ_MAX_JOBS must be above 0"):
        ServerSettings.from_env({"RESNET_VIZ_MAX_JOBS": "0"})


def test_limits_read_their_overrides_and_refuse_nonsense():
    assert Limits.from_env({"RESNET_VIZ_DOT_SECONDS": "2.5", "RESNET_VIZ_UPLOAD_BYTES": "1000"}).dot_seconds == 2.5
    assert Limits.from_env({}).upload_bytes == 200 * 2**20
    with pytest.raises(ConfigError, match="RESNET_VIZ_CACHE_BYTES must be above 0"):
        Limits.from_env({"RESNET_VIZ_CACHE_BYTES": "-1"})


def test_a_network_too_big_for_the_cache_is_made_but_not_kept():
    big = ResNetConfig(widths=(8,) * 4, blocks=(64,) * 4, strides=(1,) * 4)
    cache = SizedLRU(max_bytes=trace(preset("resnet20")).approx_bytes * 3, size=lambda t: t.approx_bytes)
    assert cache.get_or_make(big, lambda: trace(big)).totals.params == big.num_params()
    assert big not in cache


def test_a_shared_server_draws_networks_up_to_a_number_of_blocks():
    shared = ServerSettings.from_env({"RESNET_VIZ_SHARED": "1"})
    assert shared.admit(preset("resnet1202")) == preset("resnet1202")  # 600 blocks
    huge = ResNetConfig(widths=(8,) * 4, blocks=(300,) * 4, strides=(1,) * 4)
    with pytest.raises(ConfigError, match=r"has 1,200 residual blocks, and this server draws networks of at most "
                                          r"1,000 \(RESNET_VIZ_MAX_BLOCKS\)"):
        shared.admit(huge)
    assert ServerSettings.from_env({}).admit(huge) == huge
    assert ServerSettings.from_env({"RESNET_VIZ_MAX_BLOCKS": "10"}).max_blocks == 10


def test_a_full_cache_disk_is_a_warning_and_the_data_still_loads(tmp_path, monkeypatch):
    import resnet_viz.data.folders as folders

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4096 vs 0")

    monkeypatch.setattr(folders.torch, "save", full_disk)
    with pytest.warns(UserWarning, match="the decoded images are not cached .* unexpected pos"):
        data = load_dataset(image_folder(tmp_path / "pets", 16), cache_dir=tmp_path / "cache")
    assert len(data.train) + len(data.val) == 4
    assert not list((tmp_path / "cache" / "decoded").iterdir())  # no half-written file


def test_files_written_whole_get_the_permissions_open_would_give_or_keep_those_they_replace(tmp_path):
    from resnet_viz import io as io_module

    opened = tmp_path / "opened.csv"
    opened.write_bytes(b"a")  # what open() gives under this process's umask
    assert io_module.write_file(tmp_path / "fresh.csv", b"a").stat().st_mode == opened.stat().st_mode
    kept = tmp_path / "kept.csv"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    io_module.write_file(kept, b"new")
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_bytes() == b"new"
