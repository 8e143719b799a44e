"""How the app behaves when it is a server: alone on a laptop, or shared by several people.

``ServerSettings.from_env()`` reads the environment once per server. In the shared mode (``RESNET_VIZ_SHARED=1``)
data folders are only read under the configured roots, and a path outside them gets the same sentence whether it
exists or not; fewer jobs run at once, and each person may have fewer. A password, if one is set in Streamlit's
secrets, is asked for by the app itself (``app.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .caches import prune_least_recent
from .config import ResNetConfig
from .data import DataError, default_cache_dir
from .errors import ConfigError
from .limits import GiB

SHARED_MAX_BLOCKS = 1_000  # ResNet-1202 has 600


@dataclass(frozen=True)
class ServerSettings:
    shared: bool = False  # RESNET_VIZ_SHARED: several people use this server
    data_roots: tuple[Path, ...] = ()  # RESNET_VIZ_DATA_ROOTS (':'-separated): where shared data folders lie
    max_jobs: int = 2  # RESNET_VIZ_MAX_JOBS: jobs running at once on this server; the rest wait in line
    jobs_per_session: int = 2  # RESNET_VIZ_JOBS_PER_SESSION: jobs one person may have waiting or running
    grace_seconds: float = 300.0  # RESNET_VIZ_GRACE_SECONDS: a job outlives its closed page this long
    runs_bytes: int = 4 * GiB  # RESNET_VIZ_RUNS_BYTES: the app's run folders kept, least recent deleted first
    max_blocks: int | None = None  # RESNET_VIZ_MAX_BLOCKS: residual blocks a network may have (shared: 1,000)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        shared = env.get("RESNET_VIZ_SHARED", "").strip().lower() in ("1", "true", "yes", "on")
        roots = tuple(Path(p).resolve() for p in env.get("RESNET_VIZ_DATA_ROOTS", "").split(os.pathsep) if p.strip())
        defaults = cls(max_jobs=1, jobs_per_session=1, max_blocks=SHARED_MAX_BLOCKS) if shared else cls()
        blocks = _number(env, "RESNET_VIZ_MAX_BLOCKS", defaults.max_blocks or 0)
        return cls(shared=shared, data_roots=roots,
                   max_jobs=int(_number(env, "RESNET_VIZ_MAX_JOBS", defaults.max_jobs)),
                   jobs_per_session=int(_number(env, "RESNET_VIZ_JOBS_PER_SESSION", defaults.jobs_per_session)),
                   grace_seconds=_number(env, "RESNET_VIZ_GRACE_SECONDS", defaults.grace_seconds),
                   runs_bytes=int(_number(env, "RESNET_VIZ_RUNS_BYTES", defaults.runs_bytes)),
                   max_blocks=int(blocks) or None)

    def admit(self, config: ResNetConfig) -> ResNetConfig:
        """``config``, unless it has more residual blocks than this server draws (tracing the largest network the
        config's own limits allow takes half a minute on two cores and about 100 MB, per network)."""
        blocks = sum(config.blocks)
        if self.max_blocks is not None and blocks > self.max_blocks:
            raise ConfigError(f"this network has {blocks:,} residual blocks, and this server draws networks of at "
                              f"most {self.max_blocks:,} (RESNET_VIZ_MAX_BLOCKS)")
        return config

    def data_path(self, text: str) -> str:
        """What ``load_dataset`` may read for a path typed into the app. Shared: only under the data roots, with
        one sentence for every other path, so that nobody learns which server paths exist."""
        text = text.strip()
        if not text:
            raise ConfigError("give the folder or .tar.gz to use")
        if not self.shared:
            return text
        if not self.data_roots:
            raise DataError("this shared server reads no data folders (none is set in RESNET_VIZ_DATA_ROOTS); "
                            "use synthetic data or CIFAR")
        path = Path(text)
        if path.is_absolute():
            resolved = path.resolve()  # links followed: a link under a root may not lead outside it
            if any(resolved == root or root in resolved.parents for root in self.data_roots):
                return str(resolved)
        where = " or ".join(str(r) for r in self.data_roots)
        raise DataError(f"on this shared server, data folders and archives are read only under {where}; give a "
                        "full path there")

    def runs_dir(self) -> Path:
        return default_cache_dir() / "runs"

    def prune_runs(self, keep: list[Path]) -> list[Path]:
        """Delete the least recent run folders beyond ``runs_bytes``; ``keep`` (the live jobs' folders) stays."""
        folder = self.runs_dir()
        return prune_least_recent(folder.glob("run-*") if folder.is_dir() else [], self.runs_bytes, keep=keep)


def _number(env, name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {text[:40]!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be above 0, got {text[:40]!r}")
    return value
