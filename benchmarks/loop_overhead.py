"""Training-loop overhead: our fit loop as a job runs it (per-epoch MLflow logging into a real
SQLite store, early-stopping bookkeeping, best-weight copies) against hand-written PyTorch loops
on the same data, model, batch size and device, side by side in one process.

    python benchmarks/loop_overhead.py                      # CPU, the cases of BENCHMARKS.md
    python benchmarks/loop_overhead.py --device cuda --precision bf16 --compile

Baselines: `bare` slices batches from tensors already on the device (the fastest plain loop);
`dataloader` is the textbook TensorDataset + DataLoader(shuffle=True) loop. Every variant trains
the same epochs from the same initial weights; variants are interleaved over `--repeats` rounds
and the median epochs/s is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hypersweep import trust
from hypersweep.core.data import Splits, load
from hypersweep.core.fit import EarlyStopping, evaluate, fit, loss_function
from hypersweep.core.optim import build_optimizer
from hypersweep.hydra_compat import initialize_kwargs

CONF = Path(__file__).resolve().parents[1] / "conf"


def build(overrides: list[str], device: torch.device):
    with initialize_config_dir(str(CONF), **initialize_kwargs()):
        cfg = compose("config", overrides=overrides)
    data = load(cfg.data).to(device)
    torch.manual_seed(0)
    model = trust.instantiate(
        cfg.model, trust.BUILTIN, input_shape=data.input_shape, output_size=data.output_size
    )
    return cfg, data, model.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ours(
    cfg, data: Splits, model, epochs: int, batch: int, precision: str, tracking_uri: str
) -> float:
    from omegaconf import OmegaConf

    from hypersweep.tracking.runs import JobRun, flatten
    from hypersweep.tracking.store import experiment_id

    optimizer = build_optimizer(
        trust.instantiate(cfg.optimizer, trust.BUILTIN), model, cfg.regularization.l2
    )
    scheduler = trust.instantiate(cfg.scheduler, trust.BUILTIN)(optimizer)
    exp = experiment_id(tracking_uri, "bench", None)
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    with JobRun(tracking_uri, exp, "bench", {}, params) as run:
        _sync(data.x_train.device)
        start = time.perf_counter()
        fit(
            model,
            optimizer,
            scheduler,
            data,
            max_epochs=epochs,
            batch_size=batch,
            stopper=EarlyStopping("min", patience=10**6),
            precision=precision,
            on_epoch=lambda e, m: run.log_epoch(e, m),
        )
        run.flush()
        _sync(data.x_train.device)
        return epochs / (time.perf_counter() - start)


def _plain_loop(cfg, data: Splits, model, epochs: int, precision: str, batches) -> float:
    """A hand-written loop: Adam, autocast if asked, val loss per epoch; `batches()` yields one
    epoch's (x, y) batches, which is all that differs between the baselines."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = loss_function(data.task)
    device = data.x_train.device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in batches():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model(xb).float(), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        evaluate(model, data.x_val, data.y_val, data.task)["loss"].item()
    _sync(device)
    return epochs / (time.perf_counter() - start)


def run_bare(cfg, data: Splits, model, epochs: int, batch: int, precision: str) -> float:
    n, device = len(data.x_train), data.x_train.device

    def batches():
        perm = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            yield data.x_train[idx], data.y_train[idx]

    return _plain_loop(cfg, data, model, epochs, precision, batches)


def run_dataloader(cfg, data: Splits, model, epochs: int, batch: int, precision: str) -> float:
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=batch, shuffle=True)
    return _plain_loop(cfg, data, model, epochs, precision, lambda: loader)


CASES = {
    "digits_mlp_b32": (["data=digits"], 32, 40),
    "digits_mlp_b256": (["data=digits"], 256, 150),
    "synthetic100k_mlp_b256": (["data=synthetic", "data.n_samples=100000"], 256, 4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="also torch.compile the model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    print(
        f"# device {device} ({name}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, precision {args.precision}"
        f"{', compiled' if args.compile else ''}"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/bench.db"
        from hypersweep.tracking.store import prepare_store

        prepare_store(uri)
        for case in args.cases:
            overrides, batch, epochs = CASES[case]
            overrides = [*overrides, "model.hidden_units=128", "trainer.device=" + args.device]
            speeds: dict[str, list[float]] = {"ours": [], "bare": [], "dataloader": []}
            for _ in range(args.repeats):
                for variant in speeds:
                    cfg, data, model = build(overrides, device)
                    if args.compile:
                        model = torch.compile(model)
                    if variant == "ours":
                        speed = run_ours(cfg, data, model, epochs, batch, args.precision, uri)
                    elif variant == "bare":
                        speed = run_bare(cfg, data, model, epochs, batch, args.precision)
                    else:
                        speed = run_dataloader(cfg, data, model, epochs, batch, args.precision)
                    speeds[variant].append(speed)
            med = {k: statistics.median(v) for k, v in speeds.items()}
            results[case] = med
            print(
                f"{case:26s} ours {med['ours']:9.1f} ep/s   bare {med['bare']:9.1f} ep/s   "
                f"dataloader {med['dataloader']:9.1f} ep/s   "
                f"ours/bare {med['ours'] / med['bare']:.3f}"
                f"   ours/dataloader {med['ours'] / med['dataloader']:.3f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
