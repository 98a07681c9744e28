"""``python -m bench [name ...] [--rows N]``: run the benchmarks, print and save their results
as JSON. ``--rows`` goes to the benchmarks whose ``main`` takes ``rows`` (incremental)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--rows", type=int, default=None, help="generated order lines")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    names = args.names
    available = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_"))
    chosen = names or available
    unknown = [n for n in chosen if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in chosen:
        module = importlib.import_module(f"bench.bench_{name}")
        t0 = time.perf_counter()
        print(f"== bench {name}", flush=True)
        try:
            takes_rows = "rows" in inspect.signature(module.main).parameters
            kwargs = {"rows": args.rows} if args.rows is not None and takes_rows else {}
            result = module.main(OUT, **kwargs)
        except Exception as exc:  # report and go on with the others
            print(f"bench {name} failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        result["wall_seconds"] = round(time.perf_counter() - t0, 1)
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result, indent=2, default=str), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
