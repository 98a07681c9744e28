"""Delta Lake's JVM jars: fetched once from Maven Central into a local folder.

Only the two jars Delta needs on top of Spark are fetched (delta-spark and
delta-storage). Resolving ``io.delta:delta-spark`` transitively through Ivy would
also drag Delta Kernel, Unity Catalog, Hadoop and Jackson jars onto Spark's
classpath, which Spark already ships in other versions.

Behind a firewall, put the jar files listed by :func:`required_jars` into the
folder named by ``spark.jars_dir`` (default ``.jars``) and nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

from stpipe.config import PROJECT_ROOT
from stpipe.errors import SetupError

SPARK_BINARY = "4.1"
SCALA_BINARY = "2.13"
DELTA_VERSION = "4.3.1"


def required_jars() -> list[tuple[str, str, str]]:
    """(group, artifact, version) of every jar Delta needs beside Spark's own."""
    return [
        ("io.delta", f"delta-spark_{SPARK_BINARY}_{SCALA_BINARY}", DELTA_VERSION),
        ("io.delta", "delta-storage", DELTA_VERSION),
    ]


def jar_name(artifact: str, version: str) -> str:
    return f"{artifact}-{version}.jar"


def resolve_dir(jars_dir: str) -> Path:
    path = Path(jars_dir)
    return path if path.is_absolute() else PROJECT_ROOT / path


def jar_paths(jars_dir: str) -> list[Path]:
    """The jar files Spark must load; raise SetupError naming what is missing."""
    folder = resolve_dir(jars_dir)
    paths = [folder / jar_name(a, v) for _, a, v in required_jars()]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SetupError(
            f"Delta Lake jars missing in {folder}: {', '.join(missing)}. "
            "Run `make setup` (needs Maven Central), or copy these jars into that folder "
            "(or point config key spark.jars_dir at a folder that has them)."
        )
    return paths


def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
        data = response.read()
    with urllib.request.urlopen(url + ".sha1", timeout=60) as response:  # noqa: S310
        expected = response.read().decode().split()[0].strip()
    actual = hashlib.sha1(data).hexdigest()  # noqa: S324 - Maven publishes SHA-1
    if actual != expected:
        raise SetupError(f"checksum mismatch for {url}: got {actual}, Maven says {expected}")
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)


def fetch_jars(jars_dir: str, maven_repo: str) -> list[Path]:
    """Download missing jars into ``jars_dir``; a no-op when they are all there."""
    folder = resolve_dir(jars_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for group, artifact, version in required_jars():
        target = folder / jar_name(artifact, version)
        if target.is_file():
            continue
        url = f"{maven_repo.rstrip('/')}/{group.replace('.', '/')}/{artifact}/{version}/{target.name}"
        print(f"fetching {url}", file=sys.stderr)
        try:
            _download(url, target)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise SetupError(
                f"cannot download {target.name} from {maven_repo} ({exc}). "
                f"Behind a firewall, copy {', '.join(jar_name(a, v) for _, a, v in required_jars())} "
                f"into {folder} (config key spark.jars_dir), or set spark.maven_repo to a mirror."
            ) from None
    return jar_paths(jars_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m stpipe.jars [--config conf/local.yaml]``: used by ``make setup``."""
    import argparse

    from stpipe.config import load_settings

    parser = argparse.ArgumentParser(description="Fetch Delta Lake's jars once.")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        paths = fetch_jars(settings.spark.jars_dir, settings.spark.maven_repo)
    except SetupError as exc:
        print(f"setup: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"ok {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
