"""Execute the exploration notebooks with parameters (used by ``make notebooks-run`` and tests).

A notebook's cell tagged ``parameters`` holds its defaults; :func:`execute` inserts a
cell with the given values right after it (as papermill does), runs every cell top to
bottom in a fresh kernel, and returns the executed notebook and the PNGs it drew.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any


def with_parameters(nb: Any, params: dict[str, Any]) -> Any:
    """Return ``nb`` with a cell setting ``params`` after its ``parameters`` cell."""
    from nbformat.v4 import new_code_cell

    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            injected = new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
            injected.metadata["tags"] = ["injected-parameters"]
            nb.cells.insert(i + 1, injected)
            return nb
    raise ValueError("notebook has no cell tagged 'parameters'")


def execute(path: Path, params: dict[str, Any], *, cwd: Path, timeout: int = 600) -> tuple[Any, list[bytes]]:
    import nbformat
    from nbclient import NotebookClient

    nb = with_parameters(nbformat.read(str(path), as_version=4), params)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    pngs = [
        base64.b64decode(out["data"]["image/png"])
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    return nb, pngs


def main(argv: list[str] | None = None) -> int:
    """``python -m stpipe.notebooks --warehouse W --date D --out reports/notebooks``."""
    import argparse

    import nbformat

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--date", required=True)
    parser.add_argument("--out", default="reports/notebooks")
    parser.add_argument("--images", default=None, help="also save each notebook's first plot here")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        params = {"WAREHOUSE": str(Path(args.warehouse).resolve()), "RUN_DATE": args.date}
        nb, pngs = execute(path, params, cwd=root / "notebooks")
        nbformat.write(nb, str(out / path.name))
        print(f"executed {path.name}: {len(pngs)} plots -> {out / path.name}")
        if args.images and pngs:
            Path(args.images).mkdir(parents=True, exist_ok=True)
            (Path(args.images) / f"{path.stem}.png").write_bytes(pngs[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
