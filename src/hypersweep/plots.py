"""PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path


def learning_curve(
    history: list[dict[str, float]], monitor: str, best_epoch: int, out_dir: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = range(1, len(history) + 1)
    score = "val_acc" if history and "val_acc" in history[0] else "val_rmse"
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in ("train_loss", "val_loss"):
        ax_loss.plot(epochs, [h[name] for h in history], label=name)
    ax_score.plot(epochs, [h[score] for h in history], label=score, color="tab:green")
    for ax in (ax_loss, ax_score):
        if best_epoch > 0:
            ax.axvline(
                best_epoch,
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"best {monitor} (epoch {best_epoch})",
            )
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_loss.set_ylabel("loss")
    ax_score.set_ylabel(score)
    fig.tight_layout()
    path = out_dir / "learning_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
