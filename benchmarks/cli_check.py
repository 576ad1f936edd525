"""Check that the command line reproduces the denoising table's bundled row.

Run by hand (not in CI), from the repository root, with ``BSD68`` the test folder:

    python benchmarks/cli_check.py BSD68                     # runs the command line (~6 min, 1 thread)
    python benchmarks/cli_check.py BSD68 --cli-json OUT.json # or reads its saved --json output

Runs ``napari-addunet evaluate --model addunet-gray-blind --images BSD68 --sigma 15,25,50
--json`` in a separate process and compares its mean PSNR and SSIM per sigma with the
``addunet-bundled`` row of ``docs/benchmarks/denoising.json``. Writes
``docs/benchmarks/cli-check.json`` with the differences and the SHA-256 of the bundled weights
it checked, so that ``benchmarks/summary.py`` can tell whether the check still holds for the
weights in the package.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"
WEIGHTS = ROOT / "src" / "napari_addunet" / "weights" / "addunet-gray-blind.safetensors"
SIGMAS = ("15", "25", "50")
COMMAND = "napari-addunet evaluate --model addunet-gray-blind --images <bsd68> --sigma 15,25,50"


def sha256(path: Path) -> str:
    """SHA-256 of a file, hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compare(cli: dict, table_row: dict) -> dict[str, dict[str, float]]:
    """Per sigma: the CLI's means, the table's, and their absolute differences."""
    out = {}
    for s in SIGMAS:
        got = cli["results"][s]["mean"]
        want = table_row["datasets"]["bsd68"]["results"][s]
        out[s] = {
            "cli_psnr": round(got["psnr"], 4),
            "table_psnr": want["psnr"],
            "psnr_diff": round(abs(round(got["psnr"], 4) - want["psnr"]), 4),
            "ssim_diff": round(abs(round(got["ssim"], 4) - want["ssim"]), 4),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bsd68", type=Path)
    ap.add_argument(
        "--cli-json", type=Path, help="the saved --json output of the command, instead of running it"
    )
    args = ap.parse_args(argv)
    table = json.loads((DOCS / "denoising.json").read_text())["methods"].get("addunet-bundled")
    if not table or "datasets" not in table:
        raise SystemExit(
            "docs/benchmarks/denoising.json has no addunet-bundled row: run benchmarks/denoising.py"
        )
    if table.get("sha256") != sha256(WEIGHTS):
        raise SystemExit(
            "the table's bundled row was measured on other weights: rerun benchmarks/denoising.py"
        )
    if args.cli_json is None:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "cli.json"
            cmd = [sys.executable, "-m", "napari_addunet.cli", "evaluate", "--model", "addunet-gray-blind"]
            cmd += ["--images", str(args.bsd68), "--sigma", "15,25,50", "--json", str(out)]
            subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            cli = json.loads(out.read_text())
    else:
        cli = json.loads(args.cli_json.read_text())
    result = compare(cli, table)
    doc = {
        "command": COMMAND,
        "date": datetime.date.today().isoformat(),
        "weights_sha256": sha256(WEIGHTS),
        "images": len(cli["images"]),
        "results": result,
        "max_psnr_diff": max(r["psnr_diff"] for r in result.values()),
    }
    from napari_addunet.engine.atomic import atomic_write_text

    atomic_write_text(DOCS / "cli-check.json", json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
