"""The streaming path (`trainer.loader=stream`: host memory, a DataLoader gathering each batch,
pinned and copied to the device) against the resident path (`trainer.loader=resident`: the
tensors on the device, batches indexed there) on data sets that fit either way: milliseconds per
epoch (training and validation) of `fit_members` as a job builds it, the same config, data,
initial weights and batches (the two paths train identically, tests/test_streaming.py). Median
of interleaved rounds; the result file goes to benchmarks/results/streaming[_DEVICE].json.

    python benchmarks/streaming.py [--repeats 3] [--epochs 3] [--device cpu] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from _report import header
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from hypersweep import build
from hypersweep.core.data import load
from hypersweep.core.fit import EarlyStopping, fit_members
from hypersweep.hydra_compat import initialize_kwargs

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "digits (1.8k x 64), MLP 128x2, batch 64": ["data=digits", "trainer.batch_size=64"],
    "synthetic (100k x 100), MLP 256x2, batch 512": [
        "data=synthetic",
        "data.n_samples=100000",
        "data.n_features=100",
        "model.hidden_units=256",
        "trainer.batch_size=512",
    ],
}


def epoch_ms(cfg, device: torch.device, epochs: int, loader: str, workers: int) -> float:
    with open_dict(cfg):
        cfg.trainer.loader, cfg.trainer.loader_workers = loader, workers
    [data] = build.placed(cfg, [load(cfg.data)], device)
    assert (data.stream is not None) == (loader == "stream")
    members = build.members(cfg, [data], None)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fit_members(
        members,
        max_epochs=epochs,
        batch_size=cfg.trainer.batch_size,
        stopper=EarlyStopping("min", epochs + 1),
        seed=0,
        precision=cfg.trainer.precision,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    device = torch.device(args.device)
    report = header(os.getloadavg()[0])
    report["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        report["device"] = torch.cuda.get_device_name()
    os.environ.setdefault("HYPERSWEEP_CACHE_DIR", str(Path.home() / ".cache" / "hypersweep"))
    modes = [("resident", 0)] + [("stream", w) for w in args.workers]
    names = [loader if loader == "resident" else f"stream, {w} workers" for loader, w in modes]
    print(report)
    print(f"{'case':46s} " + " ".join(f"{n:>20s}" for n in names) + "   (ms/epoch)")
    report["cases"] = {}
    with initialize_config_dir(str(ROOT / "conf"), **initialize_kwargs()):
        for case, overrides in CASES.items():
            cfg = compose("config", overrides=[f"trainer.device={args.device}", *overrides])
            times: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(args.repeats):
                for name, (loader, workers) in zip(names, modes, strict=True):
                    times[name].append(epoch_ms(cfg, device, args.epochs, loader, workers))
            median = {n: statistics.median(t) for n, t in times.items()}
            report["cases"][case] = {
                n: {"ms_per_epoch": round(m, 1), "vs_resident": round(m / median["resident"], 2)}
                for n, m in median.items()
            }
            cells = " ".join(
                f"{m:10.1f} ({m / median['resident']:4.2f}x)".rjust(20) for m in median.values()
            )
            print(f"{case:46s} {cells}", flush=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    out = ROOT / "benchmarks" / "results" / f"streaming{suffix}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
