"""Build what spark-submit ships to a cluster: the project wheel and a packed Python env.

    python scripts/package.py                 # dist/stpipe-<version>-py3-none-any.whl + dist/env.tar.gz
    python scripts/package.py --wheel-only    # just the wheel

Spark's packaging guide: the code goes with ``--py-files dist/stpipe-*.whl``, the
environment with ``--archives dist/env.tar.gz#environment`` and executors run
``PYSPARK_PYTHON=./environment/bin/python`` (``make nightly DEPLOY=packed``).

The archive packs the project's ``.venv`` the way venv-pack does (venv-pack itself is
not installed): its ``bin/python`` stays a symlink to the base interpreter, so the
archive works only where that interpreter exists at the same path (here:
``/root/.pyenv/...``; on other machines install the same Python there, or use conda-pack).
On one machine or a shared disk, executors can run the ``.venv`` python directly
(``make nightly DEPLOY=venv``), which needs no archive at all.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {"__pycache__"}
SKIP_SUFFIXES = (".pyc",)


def build_wheel(dist: Path) -> Path:
    """``pip wheel`` the project (no dependencies: those are in the environment)."""
    dist.mkdir(parents=True, exist_ok=True)
    for old in dist.glob("stpipe-*.whl"):
        old.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "-w", str(dist), str(ROOT)],
        check=True,
    )
    wheels = sorted(dist.glob("stpipe-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"package: expected one stpipe wheel in {dist}, found {wheels}")
    return wheels[0]


def pack_env(venv: Path, target: Path, *, every: int = 20_000) -> Path:
    """Tar+gzip ``venv`` with its contents at the archive root; symlinks stay symlinks."""
    if not (venv / "bin" / "python").exists():
        raise SystemExit(f"package: no virtual environment at {venv}")
    partial = target.with_name(target.name + ".part")
    count, t0 = 0, time.perf_counter()
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        for folder, dirs, files in os.walk(venv):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            rel_folder = Path(folder).relative_to(venv)
            for d in dirs:  # directory symlinks are not walked into: add them as links
                if os.path.islink(os.path.join(folder, d)):
                    tar.add(os.path.join(folder, d), arcname=str(rel_folder / d), recursive=False)
            for name in sorted(files):
                if name.endswith(SKIP_SUFFIXES):
                    continue
                tar.add(os.path.join(folder, name), arcname=str(rel_folder / name), recursive=False)
                count += 1
                if count % every == 0:
                    print(f"package: {count:,} files packed ({time.perf_counter() - t0:.0f}s)",
                          flush=True)
    partial.replace(target)  # a killed run never leaves a truncated env.tar.gz behind
    print(f"package: {count:,} files, {target.stat().st_size / 2**20:,.0f} MiB -> {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=str(ROOT / "dist"))
    parser.add_argument("--venv", default=str(ROOT / ".venv"))
    parser.add_argument("--wheel-only", action="store_true", help="skip the environment archive")
    args = parser.parse_args(argv)
    dist = Path(args.dist)
    print(f"package: wheel {build_wheel(dist)}", flush=True)
    if not args.wheel_only:
        pack_env(Path(args.venv), dist / "env.tar.gz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
