"""Write docs/benchmarks.md: the summary of every benchmark page, from their JSON files.

Run by hand after any benchmark, from the repository root:

    python benchmarks/summary.py

Every number here is read from ``docs/benchmarks/*.json`` (written by the other scripts in
this folder); the statements about targets are computed from them, so the page cannot drift
from the measurements. Missing results are reported as missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "docs" / "benchmarks"
OUT = ROOT / "docs" / "benchmarks.md"
SIGMAS = ("15", "25", "50")
BM3D = {"bsd68": (31.07, 28.57, 25.62), "set12": (32.37, 29.97, 26.72)}
DNCNN_S = {"bsd68": (31.73, 29.23, 26.23), "set12": (32.86, 30.44, 27.18)}
TARGET_MARGIN = 0.3


def _load(name: str) -> dict[str, Any] | None:
    path = BENCH / name
    return json.loads(path.read_text()) if path.exists() else None


def _psnr(entry: dict[str, Any], ds: str) -> list[float] | None:
    try:
        return [entry["datasets"][ds]["results"][s]["psnr"] for s in SIGMAS]
    except KeyError:
        return None


def _fmt(values: list[float] | tuple[float, ...] | None, digits: int = 2) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values) if values else "not measured"


def _diff(a: list[float], b: tuple[float, ...]) -> str:
    return " / ".join(f"{x - y:+.2f}" for x, y in zip(a, b, strict=True))


def _target_met(ours: list[float], ds: str) -> list[bool]:
    """Per sigma: at least ``TARGET_MARGIN`` dB above published BM3D (the first step-5 target)."""
    return [o >= b + TARGET_MARGIN for o, b in zip(ours, BM3D[ds], strict=True)]


def cli_check_line(check: dict[str, Any] | None, bundled: dict[str, Any]) -> str:
    """Whether the command line reproduces the bundled row, for the weights the row measured."""
    command = "`napari-addunet evaluate --model addunet-gray-blind --images <bsd68> --sigma 15,25,50`"
    if not check:
        return f"- {command}: not yet checked against the table (`benchmarks/cli_check.py`)."
    if check.get("weights_sha256") != bundled.get("sha256"):
        return f"- {command}: last checked on other weights; not yet checked for these (`benchmarks/cli_check.py`)."
    diff = check["max_psnr_diff"]
    verdict = "reproduces the bundled row" if diff <= 0.02 else "does NOT reproduce the bundled row"
    return (
        f"- {command} {verdict} (`benchmarks/cli_check.py`, {check['date']}): the mean PSNRs differ by at "
        f"most {diff:.4f} dB over {check['images']} images."
    )


def ensemble_lines(
    name: str,
    entry: dict[str, Any],
    dncnn: dict[str, Any] | None,
    cpu: dict[str, Any] | None,
    doc: dict[str, Any] | None = None,
) -> list[str]:
    """The bundled model with a self-ensemble (row ``name``), against the same targets and its cost.

    The cost is read from the side-by-side CPU-time page when it timed this ensemble size, else
    from the denoising table's CPU column (said to be rough when the rows were timed apart).
    """
    n = entry.get("ensemble", 1)
    out = []
    for ds in ("bsd68", "set12"):
        ours = _psnr(entry, ds)
        if not ours:
            continue
        met = sum(_target_met(ours, ds))
        out.append(
            f"- {ds.upper()} with the self-ensemble of {n} (`{name}`, `ensemble={n}`, {n} forward "
            f"passes): minus published BM3D {_diff(ours, BM3D[ds])} dB, so +{TARGET_MARGIN} dB is "
            f"{'met at 3 of 3 sigmas' if met == 3 else f'NOT met ({met} of 3 sigmas)'} this way; minus "
            f"published DnCNN-S {_diff(ours, DNCNN_S[ds])} dB."
        )
    costs: list[tuple[float, str]] = []  # (ratio to DnCNN, how it was measured)
    timed = next((r for r in (cpu or {}).get("rows", []) if r.get("ensemble") == n), None)
    if timed:
        costs.append(
            (
                timed["ratio_to_dncnn"],
                f"{timed['ratio_to_dncnn']:.2f}x DnCNN's time on {_side(cpu.get('input', ''))} measured side by "
                f"side in one process ({timed['seconds_per_mp']:.1f} s/MP, "
                "[benchmarks/cpu-time.md](benchmarks/cpu-time.md))",
            )
        )
    if dncnn and "error" not in dncnn and entry.get("cpu_seconds_per_mp"):
        ratio = entry["cpu_seconds_per_mp"] / dncnn["cpu_seconds_per_mp"]
        together = not any(
            _outside_pass(doc or {}, n, e) for n, e in ((name, entry), ("budget-dncnn", dncnn))
        ) and all("side by side" in e.get("timing", "") for e in (entry, dncnn))
        if together or not costs:
            costs.append(
                (
                    ratio,
                    f"{ratio:.2f}x DnCNN's time on 1024 x 1024 in the table's timing ({entry['cpu_seconds_per_mp']:.1f} s/MP"
                    + (
                        ")"
                        if together
                        else "; the two rows were timed at different times, so the ratio is rough)"
                    ),
                )
            )
    if not costs:
        return out
    within = [r <= 1.0 for r, _ in costs]
    verdict = (
        "within the goal's CPU-time condition"
        if all(within)
        else "outside the goal's CPU-time condition"
        if not any(within)
        else "within the goal's CPU-time condition at one image size and outside it at the other"
    )
    out.append(
        f"- The self-ensemble of {n} costs {n} times the compute: {'; '.join(h for _, h in costs)}; so it is {verdict}."
    )
    return out


def _outside_pass(doc: dict[str, Any], name: str, entry: dict[str, Any]) -> bool:
    """Whether a denoising row's CPU time was measured outside the table's side-by-side pass."""
    run = doc.get("timing_run")
    return bool(run) and (name not in run.get("rows", []) or "side by side" not in entry.get("timing", ""))


def _own_threads(name: str, entry: dict[str, Any]) -> bool:
    """Whether a BM3D row was timed with the library's own thread pool (before it was set to 1)."""
    return name == "bm3d" and entry.get("settings", {}).get("num_threads") != 1


def _bundled_cpu_row(cpu: dict[str, Any] | None, ensemble: int) -> dict[str, Any] | None:
    """The bundled model's row of a ``cpu_time.py`` result with that self-ensemble size, if any."""
    return next(
        (
            r
            for r in (cpu or {}).get("rows", [])
            if r["model"].startswith("addunet-gray-blind") and r.get("ensemble", 1) == ensemble
        ),
        None,
    )


def _side(text: str) -> str:
    """``'1 x 1 x 512 x 512 float32 ...'`` -> ``'512 x 512'`` (the timed input's size)."""
    parts = text.split(" x ")
    return f"{parts[2]} x {parts[3].split()[0]}" if len(parts) >= 4 else "its input"


def _ensemble_rows(methods: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The measured rows of the bundled model with a self-ensemble, smallest ensemble first."""
    rows = [
        (name, e)
        for name, e in methods.items()
        if name.startswith("addunet-bundled-x") and "error" not in e and e.get("ensemble", 1) > 1
    ]
    return sorted(rows, key=lambda kv: kv[1]["ensemble"])


def _earlier(entry: dict[str, Any], bundled: dict[str, Any] | None) -> bool:
    """A self-ensemble row scored on other weights than the bundled row's (both hashes known)."""
    sha, now = entry.get("sha256"), (bundled or {}).get("sha256")
    return bool(sha and now and sha != now)


def denoising_section(
    doc: dict[str, Any] | None, cpu: dict[str, Any] | None, cpu_large: dict[str, Any] | None = None
) -> list[str]:
    lines = ["## Grey-level denoising: BSD68 and Set12", ""]
    if not doc:
        return lines + ["Not measured yet: `python benchmarks/denoising.py --data <data>`.", ""]
    methods = doc["methods"]
    bundled = methods.get("addunet-bundled")
    lines += [
        "Full tables, protocol and costs: [benchmarks/denoising.md](benchmarks/denoising.md). "
        "PSNR in dB at sigma 15 / 25 / 50, protocol of the published tables.",
        "",
        "| row | BSD68 | Set12 | params | CPU s/MP (1 thread) |",
        "|---|---|---|---:|---:|",
    ]
    first = {"addunet-bundled": 0} | {
        name: entry.get("ensemble", 1) for name, entry in _ensemble_rows(methods)
    }
    classical = ("bm3d", "nlm", "tv", "wavelet")

    def place(kv: tuple[str, dict[str, Any]]) -> tuple:
        # as the denoising page orders them: bundled, budget-trained, other models, classical
        name, entry = kv
        if name in first:
            return (0, first[name], "")
        if name.startswith("budget-"):
            return (1, entry.get("order", 99), name)
        if entry.get("kind") == "model":
            return (2, 0, name)
        return (3, classical.index(name) if name in classical else 99, name)

    for name, entry in sorted(methods.items(), key=place):
        if "error" in entry:
            lines.append(f"| {name} | {entry['error']} | | | |")
            continue
        params = f"{entry['parameters']:,}" if entry.get("parameters") else "-"
        shown = (
            f"{name} (earlier weights)"
            if name.startswith("addunet-bundled-x") and _earlier(entry, bundled)
            else name
        )
        lines.append(
            f"| {shown} | {_fmt(_psnr(entry, 'bsd68'))} | {_fmt(_psnr(entry, 'set12'))} | {params} | "
            f"{entry.get('cpu_seconds_per_mp', float('nan')):.2f}{'*' if _outside_pass(doc, name, entry) else ''}"
            f"{'†' if _own_threads(name, entry) else ''} |"
        )
    lines += [
        f"| BM3D, published | {_fmt(BM3D['bsd68'])} | {_fmt(BM3D['set12'])} | - | - |",
        f"| DnCNN-S, published (one model per sigma) | {_fmt(DNCNN_S['bsd68'])} | {_fmt(DNCNN_S['set12'])} | 556,097 | - |",
        "",
    ]
    if any(_own_threads(n, e) for n, e in methods.items() if "error" not in e):
        lines += [
            "† timed with BM3D's own thread pool (the library's default: as many threads as the machine "
            "has), not 1 thread as the other rows; `python benchmarks/denoising.py --data <data>` "
            "measures it again with one.",
            "",
        ]
    if any(_outside_pass(doc, n, e) for n, e in methods.items() if "error" not in e):
        lines += [
            "CPU times marked * were timed apart from the pass that timed the table's rows together "
            f"({doc['timing_run']['date']}) and do not compare with the others "
            "([benchmarks/denoising.md](benchmarks/denoising.md) says why).",
            "",
        ]
    if bundled:
        lines.append("Against the step-5 targets (bundled model, one blind network for all sigmas):")
        lines.append("")
        for ds in ("bsd68", "set12"):
            ours = _psnr(bundled, ds)
            if not ours:
                continue
            met = _target_met(ours, ds)
            lines.append(
                f"- {ds.upper()}: minus published BM3D {_diff(ours, BM3D[ds])} dB; the first target "
                f"(+{TARGET_MARGIN} dB at every sigma) is {'met' if all(met) else 'NOT met'}"
                f"{'' if all(met) else ' (' + str(sum(met)) + ' of 3 sigmas)'}; minus published DnCNN-S "
                f"{_diff(ours, DNCNN_S[ds])} dB (goal {'reached' if all(o >= d for o, d in zip(ours, DNCNN_S[ds], strict=True)) else 'not reached'})."
            )
        for name, entry in _ensemble_rows(methods):
            if _earlier(entry, bundled):
                lines.append(
                    f"- `{name}` was scored ({entry.get('date', '?')}) on earlier bundled weights, not "
                    f"on these; `python benchmarks/denoising.py --data <data> --redo {name}` remeasures it."
                )
                continue
            lines += ensemble_lines(name, entry, methods.get("budget-dncnn"), cpu, doc)
        lines.append(cli_check_line(_load("cli-check.json"), bundled))
        bm3d = methods.get("bm3d")
        if bm3d and "error" not in bm3d:
            lines.append(
                f"- Our BM3D run minus the published BM3D on BSD68: {_diff(_psnr(bm3d, 'bsd68'), BM3D['bsd68'])} dB, "
                "which checks our protocol against the published one."
            )
        dn = methods.get("budget-dncnn")
        if dn and "error" not in dn:
            lines.append(
                f"- DnCNN trained by our code with the short same budget (see below) minus published DnCNN-S on BSD68: "
                f"{_diff(_psnr(dn, 'bsd68'), DNCNN_S['bsd68'])} dB: the budget, not the protocol, separates them."
            )
    if cpu:
        rows = {r["model"]: r for r in cpu["rows"]}
        b = _bundled_cpu_row(cpu, 1)
        if b:
            lines.append(
                f"- CPU time per megapixel, measured side by side in one process "
                f"([benchmarks/cpu-time.md](benchmarks/cpu-time.md)): the bundled model takes "
                f"{b['ratio_to_dncnn']:.2f}x DnCNN's time ({b['seconds_per_mp']:.1f} vs "
                f"{b['seconds_per_mp'] / b['ratio_to_dncnn']:.1f} s/MP, 1 thread, shared machine), with "
                f"{b['macs_per_pixel']:,} multiply-accumulates per pixel against DnCNN's "
                f"{rows['dncnn (17 layers, 64 channels)']['macs_per_pixel']:,}."
            )
            if "default_layout_seconds_per_mp" in b and cpu.get("layout"):
                layout = cpu["layout"].split(" (")[0]
                lines.append(
                    f"- Those times are in the engine's memory layout on this CPU ({layout}). In the "
                    f"default layout, timed in the same rounds, the bundled model takes "
                    f"{b['default_layout_seconds_per_mp']:.1f} s/MP and DnCNN "
                    f"{b['default_layout_seconds_per_mp'] / b['default_layout_ratio_to_dncnn']:.1f} "
                    f"({b['default_layout_ratio_to_dncnn']:.2f}x)."
                )
    b_large = _bundled_cpu_row(cpu_large, 1)
    if cpu_large and b_large:
        x2_large = _bundled_cpu_row(cpu_large, 2)
        page = f"benchmarks/{cpu_large.get('stem', 'cpu-time-1024')}.md"
        lines.append(
            f"- The same side-by-side benchmark on {_side(cpu_large.get('input', ''))} "
            f"([{page}]({page}), {cpu_large.get('date', '?')}): the bundled model "
            f"takes {b_large['ratio_to_dncnn']:.2f}x DnCNN's time ({b_large['seconds_per_mp']:.1f} vs "
            f"{b_large['seconds_per_mp'] / b_large['ratio_to_dncnn']:.1f} s/MP)"
            + (f", its self-ensemble of 2 {x2_large['ratio_to_dncnn']:.2f}x." if x2_large else ".")
        )
    dn = methods.get("budget-dncnn")
    side_by_side = bool(bundled and dn) and not any(
        _outside_pass(doc, n, e) for n, e in (("addunet-bundled", bundled), ("budget-dncnn", dn))
    )
    if doc.get("timing_run") and bundled and dn and "error" not in dn and side_by_side:
        ratio = bundled["cpu_seconds_per_mp"] / dn["cpu_seconds_per_mp"]
        lines.append(
            f"- The denoising table's own side-by-side timing pass (1024 x 1024 input, "
            f"{doc['timing_run']['date']}) gives {ratio:.2f}x ({bundled['cpu_seconds_per_mp']:.1f} vs "
            f"{dn['cpu_seconds_per_mp']:.1f} s/MP): the ratio depends on the image size and the machine's load."
        )
    lines += [
        "",
        "The rows `budget-*` are models trained by our own code on Train400 with one short, equal "
        "budget (500 steps of 16 patches of 64 x 64; `benchmarks/select_config.py`): they compare "
        "architectures at equal training, not against the published, fully trained networks.",
        "",
    ]
    return lines


def selection_section(doc: dict[str, Any] | None) -> list[str]:
    lines = ["## Choosing the bundled configuration (Train400 validation split)", ""]
    if not doc:
        return lines + ["Not measured yet.", ""]
    lines += [
        "Full table: [benchmarks/config-selection.md](benchmarks/config-selection.md). Held-out "
        "Train400 PSNR (dB) at sigma 15 / 25 / 50 after the same 500-step budget:",
        "",
    ]
    for name, row in doc["rows"].items():
        lines.append(
            f"- `{name}` ({row['description']}): {_fmt([row['val_psnr'][s] for s in SIGMAS])}, "
            f"{row['parameters']:,} parameters, {row['macs_per_pixel']:,} MACs/px"
        )
    if doc.get("decision"):
        lines += ["", doc["decision"]]
    return lines + [""]


def multitask_section(doc: dict[str, Any] | None) -> list[str]:
    lines = ["## Joint denoising and classification: Fashion-MNIST", ""]
    if not doc:
        return lines + ["Not measured yet.", ""]
    runs = doc["runs"]
    lines += [
        "Full tables, gates against lambda and the figure: [benchmarks/multitask.md](benchmarks/multitask.md). "
        "Test accuracy / PSNR (dB), 1,000 training steps per run, one seed:",
        "",
        "| sigma | lambda 0 | 0.1 | 1 | 10 | classify only | U-Net, lambda 1 |",
        "|---:|---|---|---|---|---|---|",
    ]
    for sigma in ("25", "50"):
        cells = []
        for key in ("lambda0", "lambda0.1", "lambda1", "lambda10"):
            r = runs.get(f"sigma{sigma}/addunet/{key}")
            cells.append(f"{r['accuracy']:.3f} / {r['psnr']:.2f}" if r else "-")
        c = runs.get(f"sigma{sigma}/addunet-classify/lambda1")
        u = runs.get(f"sigma{sigma}/unet/lambda1")
        cells.append(f"{c['accuracy']:.3f}" if c else "-")
        cells.append(f"{u['accuracy']:.3f} / {u['psnr']:.2f}" if u else "-")
        lines.append(f"| {sigma} | " + " | ".join(cells) + " |")
    moves = []  # the largest change of one level's learned gate across lambda, per sigma
    for sigma in ("25", "50"):
        gates = [
            runs[f"sigma{sigma}/addunet/{k}"]["gates"]
            for k in ("lambda0", "lambda0.1", "lambda1", "lambda10")
            if f"sigma{sigma}/addunet/{k}" in runs
        ]
        if len(gates) > 1:
            moves.append(
                max(max(g[j] for g in gates) - min(g[j] for g in gates) for j in range(len(gates[0])))
            )
    move = f"by at most {max(moves):.2f}" if moves else "little"
    lines += [
        "",
        "Lambda 0 trains no classifier (its accuracy is the untrained head's). The learned gates "
        f"move {move} with lambda and show no shallow-versus-deep split: these "
        "runs do not reproduce the paper's finding that shallow gates favour reconstruction and "
        "deep ones discrimination (the multi-task page says why this test is indirect here).",
        "",
    ]
    return lines


def _gate_sweep_weights(doc: dict[str, Any], denoising: dict[str, Any] | None) -> str:
    """Whether the sweep ran on the weights the denoising table scored as the bundled model."""
    bundled = ((denoising or {}).get("methods") or {}).get("addunet-bundled") or {}
    if doc["model"] != bundled.get("source") or not bundled.get("sha256"):
        return ""
    rerun = f" (rerun: `{doc['command']}`)"
    if doc.get("weights_sha256"):
        if doc["weights_sha256"] == bundled["sha256"]:
            return ""
        return f" **Measured {doc['date']} on earlier weights of {doc['model']}**{rerun}."
    if doc.get("date", "") < bundled.get("date", ""):
        return (
            f" **Measured {doc['date']}, before the bundled row was scored ({bundled['date']}), "
            f"and without a record of its weights: probably on earlier weights**{rerun}."
        )
    return ""


def gate_section(doc: dict[str, Any] | None, denoising: dict[str, Any] | None = None) -> list[str]:
    lines = ["## Gate sweep (the paper's Fig. 5)", ""]
    if not doc:
        return lines + ["Not measured yet: `python benchmarks/gate_sweep.py <BSD68>`.", ""]
    lines += [
        f"Full tables and figures: [benchmarks/gate-sweep.md](benchmarks/gate-sweep.md) "
        f"({doc['model']}, first {len(doc['images'])} BSD68 images)." + _gate_sweep_weights(doc, denoising),
        "",
    ]
    for res in doc["results"]:
        worst = min(res["levels"], key=lambda lev: lev["psnr_at_zero"])
        best_gain = max(lev["best_psnr"] - res["psnr_learned"] for lev in res["levels"])
        lines.append(
            f"- sigma {res['sigma']:g}: learned gates give {res['psnr_learned']:.2f} dB; closing gate "
            f"{worst['level']} costs {res['psnr_learned'] - worst['psnr_at_zero']:.2f} dB; the best single-gate "
            f"change found in [0, 2x learned] gains {best_gain:+.3f} dB."
        )
    return lines + [""]


def self_supervised_section(doc: dict[str, Any] | None, denoising: dict[str, Any] | None) -> list[str]:
    lines = ["## Without clean images: Noise2Void against supervised training (BSD68)", ""]
    if not doc or not doc.get("rows"):
        return lines + ["Not measured yet: `python benchmarks/self_supervised.py --data <data>`.", ""]
    lines += [
        "Full table and settings: [benchmarks/self-supervised.md](benchmarks/self-supervised.md). "
        "One network (AddUNet Real, multi-scale, width 64) and one short budget for every row; "
        "PSNR (dB) on BSD68 with the protocol of the published tables:",
        "",
    ]
    methods = (denoising or {}).get("methods", {})
    for sigma in sorted({r["sigma"] for r in doc["rows"].values()}):
        rows = sorted((r for r in doc["rows"].values() if r["sigma"] == sigma), key=lambda r: r["steps"])
        sup = next((r for r in rows if r["name"] == "supervised-train400"), rows[0])
        main_rows = {r["name"]: r for r in rows if r["settings"] == sup["settings"]}

        def star(r: dict[str, Any]) -> str:
            return "" if r.get("scored") == "last weights" else "*"

        parts = [
            f"{n} {main_rows[n]['psnr']:.2f}{star(main_rows[n])}"
            for n in ("n2v-test", "n2v-train400", "supervised-train400")
            if n in main_rows
        ]
        for key, label in (("bm3d", "BM3D"), ("nlm", "non-local means")):
            try:
                parts.append(
                    f"{label} {methods[key]['datasets']['bsd68']['results'][f'{sigma:g}']['psnr']:.2f}"
                )
            except KeyError:
                pass
        line = f"- sigma {sigma:g} (noisy input {sup['input_psnr']:.2f}, {sup['steps']} steps): " + ", ".join(
            parts
        )
        if "n2v-test" in main_rows and "supervised-train400" in main_rows:
            gap = main_rows["n2v-test"]["psnr"] - main_rows["supervised-train400"]["psnr"]
            line += f"; training on the noisy images alone costs {-gap:.2f} dB against clean references"
        others = [
            f"{r['name']} with {r['steps']} steps, mask {r['settings']['mask_fraction']:g}: {r['psnr']:.2f}{star(r)}"
            for r in rows
            if r["settings"] != sup["settings"]
        ]
        lines.append(line + (f". Other budgets: {'; '.join(others)}." if others else "."))
    if any(r.get("scored") != "last weights" for r in doc["rows"].values()):
        lines.append(
            "- \\* scored on the epoch with the lowest training loss, not on the last weights as the "
            "others (measured before that rule; the page says how to measure them again)."
        )
    return lines + [""]


def percentile_section(doc: dict[str, Any] | None) -> list[str]:
    lines = ["## Training on clean 16-bit images: which percentiles map the pairs", ""]
    if not doc or not doc.get("table"):
        return lines + ["Not measured yet: `python benchmarks/percentile_noise.py`.", ""]
    lines += [
        "Full table and settings: [benchmarks/percentile-noise.md](benchmarks/percentile-noise.md). "
        f"A tiny AddUNet, {doc['steps']} steps, seeds {', '.join(map(str, doc['seeds']))}; mean PSNR (dB) "
        "of three 16-bit test images when training maps each pair by its noisy image's percentiles "
        "(as inference does; the package) against the clean image's (before):",
        "",
    ]
    for row in doc["table"]:
        lines.append(
            f"- trained on {row['setting']}, scored at sigma {row['sigma']}: {row['noisy-percentiles']:.2f} "
            f"against {row['clean-percentiles']:.2f} ({row['difference']:+.2f}; noisy input {row['input']:.2f})."
        )
    return lines + [""]


def main() -> None:
    lines = [
        "# Benchmarks: summary",
        "",
        "Generated by `python benchmarks/summary.py` from the JSON files in `docs/benchmarks/`; "
        "each linked page names the command that made its numbers. Measured on a shared 2-core "
        "CPU machine: timings are noisy, ratios measured together are the ones to read.",
        "",
    ]
    lines += denoising_section(_load("denoising.json"), _load("cpu-time.json"), _load("cpu-time-1024.json"))
    lines += selection_section(_load("config-selection.json"))
    lines += multitask_section(_load("multitask.json"))
    lines += gate_section(_load("gate-sweep.json"), _load("denoising.json"))
    lines += self_supervised_section(_load("self-supervised.json"), _load("denoising.json"))
    lines += percentile_section(_load("percentile-noise.json"))
    lines += [
        "## Engine and GUI",
        "",
        "- Inference (tiling overhead, memory of the lazy paths): [benchmarks/inference.md](benchmarks/inference.md).",
        "- Training throughput: [benchmarks/training.md](benchmarks/training.md).",
        "- Gate-slider preview latency: [benchmarks/gui.md](benchmarks/gui.md).",
        "",
    ]
    from napari_addunet.engine.atomic import atomic_write_text

    atomic_write_text(OUT, "\n".join(lines))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
