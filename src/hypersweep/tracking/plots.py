"""The per-job learning curve, an SVG written without a plotting library (see svg.py)."""

from __future__ import annotations

from pathlib import Path

from hypersweep.tracking import svg


def learning_curve(
    history: list[dict[str, float]], monitor: str, best_epoch: int, out_dir: Path
) -> Path:
    """Loss (train and val) and the validation score per epoch, the best epoch marked."""
    epochs = list(range(1, len(history) + 1))
    score = "val_acc" if history and "val_acc" in history[0] else "val_rmse"
    best = [(best_epoch, f"best {monitor} (epoch {best_epoch})")] if best_epoch > 0 else []
    loss = svg.Panel(
        xlabel="epoch",
        ylabel="loss",
        series=[
            svg.Series(name, epochs, [h[name] for h in history], svg.PALETTE[i])
            for i, name in enumerate(("train_loss", "val_loss"))
        ],
        vlines=best,
        integer_x=True,
    )
    quality = svg.Panel(
        xlabel="epoch",
        ylabel=score,
        series=[svg.Series(score, epochs, [h[score] for h in history], svg.PALETTE[2])],
        vlines=best,
        integer_x=True,
    )
    return svg.write(out_dir / "learning_curve.svg", [loss, quality])
