"""``cutpaste predict``: score new images with a saved detector: a CSV of decisions, and masks.

Every readable image under the given files and folders (recursive; any supported format, any
size, grayscale or RGBA) is decoded and resized as in training and scored. ``OUT/predictions.csv``
has one row per file: path, raw score, percentile among normal images, normalised score (0.5 at
the threshold), decision, and for a patch detector the overlay and mask it wrote
(``OUT/overlays/``, ``OUT/masks/``, at the file's own resolution). Unreadable files get a row with
their reason, are listed on stderr, and make the exit status 1, after every other image is scored.
``OUT/summary.json`` (threshold, counts, the detector's provenance) is written last.

Example:
    cutpaste predict --detector runs/carpet-detector.pt data/new_parts --out outputs/predict
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import sys
from pathlib import Path

from cutpaste_lib.commands import _args, _detector_args

COLUMNS = ("path", "score", "percentile", "normalized", "decision", "overlay", "mask", "error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--detector",
        type=_args.existing_file,
        required=True,
        help="detector file (cutpaste evaluate/localize --save-detector)",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    parser.add_argument(
        "--out",
        type=_args.out_dir,
        default=Path("outputs") / "predict",
        help="output folder (default outputs/predict)",
    )
    _detector_args.add_fpr(
        parser, "fix the threshold again at this false-positive rate (default: the detector's)"
    )
    parser.add_argument(
        "--batch-size", type=_args.positive_int, default=32, help="images per pass (default 32)"
    )
    _args.add_device(parser)


def _overlay_png(image, heat, scale, size):
    """The image with its heatmap (training scale, jet) blended on, at ``size`` = (H, W)."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    z = scale.standardize(heat).clamp(0, scale.high).numpy() / scale.high
    colour = (colormaps["jet"](z)[..., :3] * 255).astype(np.uint8)
    base = image.permute(1, 2, 0).numpy()
    blend = (0.5 * base + 0.5 * colour).astype(np.uint8)
    return Image.fromarray(blend).resize((size[1], size[0]), Image.BILINEAR)


def _mask_png(mask, size):
    import numpy as np
    from PIL import Image

    return Image.fromarray(mask.numpy().astype(np.uint8) * 255).resize(
        (size[1], size[0]), Image.NEAREST
    )


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from cutpaste_lib import io
    from cutpaste_lib.cli import UserError
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.detector import Detector, expand_paths, load_images

    detector = Detector.load(args.detector, device=resolve_device(args.device))
    if args.fpr is not None:
        detector = detector.with_fpr(args.fpr)
    files, problems = expand_paths(args.paths)
    batch = load_images(files, detector.image_size, progress=len(files) > 50)
    problems += batch.failed
    if not batch.paths:
        raise UserError(
            "no readable image among the given paths: "
            + "; ".join(f"{p}: {why}" for p, why in problems)
        )
    rows: list[dict] = []
    patch = detector.kind == "patch"
    out = Path(args.out)
    pngs = []
    for start in tqdm(
        range(0, len(batch.paths), args.batch_size), desc="score", unit="batch", disable=None
    ):
        stop = start + args.batch_size
        pred = detector.predict(batch.images[start:stop], batch_size=args.batch_size)
        for j, path in enumerate(batch.paths[start:stop]):
            i = start + j
            row = {
                "path": str(path),
                "score": f"{float(pred.scores[j]):.10g}",
                "percentile": f"{float(pred.percentiles[j]):.2f}",
                "normalized": f"{float(pred.normalized[j]):.6f}",
                "decision": "defective" if bool(pred.decisions[j]) else "good",
            }
            if patch:
                name = f"{i:05d}_{path.stem}.png"
                size = batch.original_sizes[i]
                image = batch.images[i]
                pngs.append(
                    (
                        out / "overlays" / name,
                        _overlay_png(image, pred.maps[j], detector.density.scale, size),
                    )
                )
                pngs.append((out / "masks" / name, _mask_png(pred.masks[j], size)))
                row["overlay"], row["mask"] = f"overlays/{name}", f"masks/{name}"
            rows.append(row)
    rows += [{"path": str(p), "decision": "error", "error": why} for p, why in problems]

    for path, picture in pngs:
        io.atomic_write(path, lambda p, picture=picture: picture.save(p, format="PNG"))
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(out / "predictions.csv", buf.getvalue())
    n_bad = sum(r["decision"] == "defective" for r in rows)
    summary = {
        "detector": str(Path(args.detector).resolve()),
        "kind": detector.kind,
        "threshold": detector.threshold.to_dict(),
        "pixel_threshold": None if not patch else detector.pixel_threshold.to_dict(),
        "images_scored": len(batch.paths),
        "defective": n_bad,
        "unreadable": [{"path": str(p), "reason": why} for p, why in problems],
        "source": detector.info,
    }
    io.write_json(out / "summary.json", summary)
    print(f"{len(batch.paths)} images scored: {n_bad} defective, {len(batch.paths) - n_bad} good")
    print(detector.threshold.describe())
    if detector.threshold.warning:
        print(f"warning: {detector.threshold.warning}", file=sys.stderr)
    print(
        f"wrote {out / 'predictions.csv'}"
        + (f" and {len(pngs) // 2} overlays + masks" if patch else "")
    )
    for path, why in problems:
        reason = why if str(path) in why else f"cannot read {path}: {why}"
        print(f"cutpaste predict: {reason}", file=sys.stderr)
    return 1 if problems else 0
