"""The Markdown report: provenance, Table 1 (+ seed ensemble), Table 5 (Union), Table 2 (patch).

Ours are shown next to the paper's numbers, which appear only for MVTec AD data: on synthetic data
they are "—".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cutpaste_lib import paper
from cutpaste_lib.augment import VARIANTS
from cutpaste_lib.errors import CutPasteError
from cutpaste_lib.io import write_text
from cutpaste_lib.reproduce.grid import TABLE1_VARIANTS, VARIANT_TITLES
from cutpaste_lib.reproduce.results import check_consistent, read_results
from cutpaste_lib.reproduce.row import provenance
from cutpaste_lib.reproduce.scores import ensembles
from cutpaste_lib.reproduce.stats import fmt_delta, fmt_num, fmt_stat, group_average, summarize


def format_tables(
    rows: Sequence[dict], *, base_dir: str | Path = ".", title: str | None = None
) -> str:
    """The Markdown report: provenance, Table 1 (+ ensemble), Table 5 (union), Table 2 (patch)."""
    rows = list(rows)
    if not rows:
        raise CutPasteError("no results to tabulate: the CSV is empty (run the grid first)")
    check_consistent(rows, "the results")
    base_dir = Path(base_dir)
    show_paper = rows[0]["data_kind"] == "mvtec"
    prov = provenance(rows)
    lines = [f"# {title or 'CutPaste reproduction: ours next to the paper'}", ""]
    lines.append("How these numbers were obtained:")
    lines += [f"- **{k}**: {v}" for k, v in prov.items()]
    lines += [
        "",
        "Ours: percent, mean ± standard error over seeds (n per cell = number of seeds); group "
        "averages are means of category means with the errors propagated. Δ = ours − paper.",
        f"Paper: {paper.CITATION} Table 1/2/5; averages over the same categories as ours.",
    ]
    if not show_paper:
        lines.append(
            "**These are not MVTec AD categories, so the paper's numbers do not apply and show as "
            "—.** The synthetic data only checks that the pipeline runs end to end."
        )
    cats = [c for c in paper.CATEGORIES if any(r["category"] == c for r in rows)]
    cats += sorted({r["category"] for r in rows} - set(cats))
    kinds = {r["category"]: r["kind"] for r in rows}
    lines += ["", *_table1(rows, cats, kinds, base_dir=base_dir, show_paper=show_paper)]
    if any(r["variant"] == "union" and r["mode"] == "image" for r in rows):
        lines += ["", *_table5(rows, cats, kinds, show_paper)]
    if any(r["mode"] == "patch" for r in rows):
        lines += ["", *_table2(rows, cats, kinds, show_paper)]
    return "\n".join(lines) + "\n"


def _groups(cats: Sequence[str], kinds: dict[str, str]) -> list[tuple[str, list[str]]]:
    groups = [
        ("texture mean", [c for c in cats if kinds[c] == "texture"]),
        ("object mean", [c for c in cats if kinds[c] == "object"]),
        ("all mean", list(cats)),
    ]
    return [(name, cs) for name, cs in groups if cs]


def _paper_avg(values: Sequence[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _table1(
    rows: Sequence[dict],
    cats: Sequence[str],
    kinds: dict[str, str],
    *,
    base_dir: Path,
    show_paper: bool,
) -> list[str]:
    stats = summarize([r for r in rows if r["mode"] == "image"])
    variants = [v for v in TABLE1_VARIANTS if any(k[1] == v for k in stats)]
    ens = ensembles(rows, base_dir) if "3way" in variants else {}
    has_ens = any(isinstance(v, float) for v in ens.values())
    header = ["category"]
    for v in variants:
        header += [VARIANT_TITLES[v], "paper", "Δ"]
    if has_ens:
        header += ["Ensemble (3-way seeds)", "paper", "Δ"]
    out = [
        "## Table 1: image AUROC (%)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def paper_value(c: str, col: str) -> float | None:
        return paper.image_auroc(c, col) if show_paper else None

    for c in cats:
        cells = [c]
        for v in variants:
            s = stats.get((c, v, "image"))
            p = paper_value(c, v)
            cells += [fmt_stat(s), fmt_num(p), fmt_delta(s.mean if s else None, p)]
        if has_ens:
            e = ens.get(c)
            e_pct = e * 100 if isinstance(e, float) else None
            p = paper_value(c, "ensemble")
            cells += [
                fmt_num(e_pct) if e_pct is not None else f"— ({e or 'not run'})",
                fmt_num(p),
                fmt_delta(e_pct, p),
            ]
        out.append("| " + " | ".join(cells) + " |")
    for name, cs in _groups(cats, kinds):
        cells = [f"**{name}**"]
        for v in variants:
            cell_stats = [stats.get((c, v, "image")) for c in cs]
            s = group_average(cell_stats) if all(cell_stats) else None
            p = _paper_avg([paper_value(c, v) for c in cs])
            cells += [fmt_stat(s), fmt_num(p), fmt_delta(s.mean if s else None, p)]
        if has_ens:
            es = [ens.get(c) for c in cs]
            e_pct = float(np.mean(es)) * 100 if all(isinstance(e, float) for e in es) else None
            p = _paper_avg([paper_value(c, "ensemble") for c in cs])
            cells += [fmt_num(e_pct), fmt_num(p), fmt_delta(e_pct, p)]
        out.append("| " + " | ".join(cells) + " |")
    if show_paper and len(cats) == len(paper.CATEGORIES):
        stated = ", ".join(f"{VARIANT_TITLES.get(k, k)} {v}" for k, v in paper.TABLE1_MEAN.items())
        out += ["", f"The paper's stated means (all 15): {stated}."]
    if has_ens:
        out += [
            "",
            "Ensemble: each seed's 3-way model's test scores are standardised by the mean and "
            "standard deviation of its own cross-fitted training scores, then averaged (one "
            "number per category, no error bar).",
        ]
    return out


def _table5(
    rows: Sequence[dict], cats: Sequence[str], kinds: dict[str, str], show_paper: bool
) -> list[str]:
    stats = summarize([r for r in rows if r["mode"] == "image" and r["variant"] == "union"])
    out = [
        "## Table 5: Binary (Union), image AUROC (%)",
        "",
        "| group | Union (ours) | paper | Δ |",
        "|---|---|---|---|",
    ]
    cats = [c for c in cats if (c, "union", "image") in stats]
    for name, cs in _groups(cats, kinds):
        s = group_average([stats[(c, "union", "image")] for c in cs])
        group = name.split()[0]
        # The paper gives only group averages over all of a group's categories.
        full = set(cs) == set(
            paper.TEXTURES
            if group == "texture"
            else paper.OBJECTS
            if group == "object"
            else paper.CATEGORIES
        )
        p = paper.TABLE5_UNION[group] if show_paper and full else None
        out.append(f"| {name} | {fmt_stat(s)} | {fmt_num(p)} | {fmt_delta(s.mean, p)} |")
    out += [
        "",
        "The paper publishes only group averages for Union, over the whole group: a partial "
        "group shows —.",
    ]
    return out


def _paper_pixel(category: str, variant: str, show_paper: bool) -> float | None:
    return paper.pixel_auroc(category) if show_paper and variant == "3way" else None


def _table2(
    rows: Sequence[dict], cats: Sequence[str], kinds: dict[str, str], show_paper: bool
) -> list[str]:
    patch_rows = [r for r in rows if r["mode"] == "patch"]
    pix = summarize(patch_rows, "pixel_auroc")
    pro = summarize(patch_rows, "aupro")
    img = summarize(patch_rows, "image_auroc")
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in patch_rows)]
    out = []
    for v in variants:
        cs = [c for c in cats if (c, v, "patch") in pix]
        out += [
            f"## Table 2: pixel AUROC (%), {VARIANT_TITLES[v]} patch model",
            "",
            "| category | pixel AUROC (ours) | paper | Δ | AUPRO (ours) | image AUROC, max patch score (ours) |",
            "|---|---|---|---|---|---|",
        ]
        for c in cs:
            s = pix[(c, v, "patch")]
            p = _paper_pixel(c, v, show_paper)
            out.append(
                f"| {c} | {fmt_stat(s)} | {fmt_num(p)} | {fmt_delta(s.mean, p)} | "
                f"{fmt_stat(pro.get((c, v, 'patch')))} | {fmt_stat(img.get((c, v, 'patch')))} |"
            )
        for name, group in _groups(cs, kinds):
            s = group_average([pix[(c, v, "patch")] for c in group])
            p = _paper_avg([_paper_pixel(c, v, show_paper) for c in group])
            pro_stats = [pro.get((c, v, "patch")) for c in group]
            pro_s = group_average(pro_stats) if all(pro_stats) else None
            out.append(
                f"| **{name}** | {fmt_stat(s)} | {fmt_num(p)} | {fmt_delta(s.mean, p)} | "
                f"{fmt_stat(pro_s)} | |"
            )
        out += [
            "",
            "The paper publishes pixel AUROC of the 3-way patch model only (mean 96.0); "
            "AUPRO has no paper number.",
            "",
        ]
    return out[:-1]


def write_tables(
    results: str | Path | Sequence[dict],
    out_dir: str | Path,
    *,
    base_dir: str | Path | None = None,
    title: str | None = None,
    filename: str = "tables.md",
) -> Path:
    """Write ``out_dir/<filename>`` (Markdown) from a results CSV (or its rows); return its path.

    ``base_dir`` is the folder that score-file paths in the rows are relative to (default: the
    CSV's folder, or ``out_dir`` when rows are given).
    """
    out_dir = Path(out_dir)
    if isinstance(results, (str, Path)):
        csv_path = Path(results)
        rows = read_results(csv_path)
        base = Path(base_dir) if base_dir is not None else csv_path.parent
    else:
        rows = list(results)
        base = Path(base_dir) if base_dir is not None else out_dir
    text = format_tables(rows, base_dir=base, title=title)
    return write_text(out_dir / filename, text)
