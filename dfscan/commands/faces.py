"""`dfscan sbi`: a face set -> a pool of self-blended pseudo-fakes and matching real views (a face set too)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dfscan.commands.data import end_with_failures
from dfscan.console import fail, out
from dfscan.errors import EXIT_SETUP, EXIT_USAGE


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    return fail(message, code)


def sbi_command(
    face_set: Path = typer.Argument(..., help="Face set to blend (images/ + labels.csv; its faceset.json gives the crop geometry)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Face set to write (resumable)."),
    copies: int = typer.Option(2, "--copies", help="Views per face: each real face gives this many (real, blended) pairs."),
    size: int = typer.Option(128, "--size", help="View side in pixels (the model's input size)."),
    margin: float = typer.Option(0.15, "--margin", help="Crop margin of the views around the detector box: the scanner's (goes to the manifest)."),
    margin_jitter: float = typer.Option(0.1, "--margin-jitter", help="Uniform +- jitter of the margin, where the stored crop has room."),
    lowres: float = typer.Option(0.0, "--lowres", help="Share of views shrunk to a 32-96 px face and enlarged again (small faces, as in crowds), real and blended alike."),
    splits: List[str] = typer.Option(["train,val"], "--splits", help="Splits to take (comma-separated)."),
    domain: Optional[str] = typer.Option(None, "--domain", help="Domain written on every row. Default: the face set's folder name."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most N real and N fake faces per split (seeded)."),
    no_fakes: bool = typer.Option(False, "--no-fakes", help="Leave the face set's own fakes out (pseudo-fakes only)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Self-blended images (Shiohara & Yamasaki 2022) from every real face, plus views of its fakes, all cut
    to the scanner's geometry and degraded alike. Landmarks: dlib's 68-point model (non-commercial)."""
    if not 0.0 <= lowres <= 1.0:
        raise _fail("--lowres must be in [0, 1]")
    if (copies < 1 or not 16 <= size <= 1024 or not -0.5 < margin <= 2.0 or not 0 <= margin_jitter <= 2.0
            or (limit is not None and limit < 1)):
        raise _fail("need --copies >= 1, 16 <= --size <= 1024, -0.5 < --margin <= 2, 0 <= --margin-jitter <= 2, "
                    "--limit >= 1")
    if not (face_set / "labels.csv").is_file():
        raise _fail(f"{face_set} is not a face set: no labels.csv")
    from dfscan.train.sbi import ViewSettings, build_pool  # noqa: PLC0415

    wanted = tuple(s.strip() for v in splits for s in v.split(",") if s.strip())
    if not wanted or set(wanted) - {"train", "val", "test"}:
        raise _fail(f"--splits must name train, val or test (comma-separated), not {','.join(splits)!r}")
    view = ViewSettings(size=size, margin=margin, margin_jitter=margin_jitter, lowres_p=lowres)
    try:
        stats = build_pool(face_set, out_dir, view, copies=copies, splits=wanted, domain=domain, limit=limit,
                           fakes=not no_fakes, seed=seed)
    except RuntimeError as exc:
        raise _fail(str(exc), EXIT_SETUP) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    out.print(f"{out_dir}: {stats.reals} real views, {stats.blends} self-blended, {stats.fakes} fake views"
              + (f", {stats.skipped} unreadable faces skipped" if stats.skipped else ""), highlight=False)
    end_with_failures(stats.failures)
