"""`hypersweep best`, `hypersweep reproduce` and `hypersweep ui`: select, test once, register;
re-run a run; open the MLflow UI on a sweep's runs table."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from hypersweep.tracking.store import default_tracking_uri


def _client(uri: str):
    """The MLflow client of an existing store: a SQLite file that is not there is an error, not a
    new empty store left behind."""
    from hypersweep.errors import SelectionError
    from hypersweep.tracking.store import mlflow_client

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise SelectionError(
            f"--tracking-uri={uri!r}: no MLflow store there; expected the store a sweep wrote "
            "(run from the directory of the sweep, or pass --tracking-uri)"
        )
    return mlflow_client(uri)


def best(args: argparse.Namespace) -> int:
    from hypersweep import selection, trust

    trusted = trust.patterns(args.trust)
    client = _client(args.tracking_uri)
    runs = selection.find_runs(client, args.experiment, args.sweep)
    ranking = selection.rank(runs, args.metric)
    print(f"{len(ranking.runs)} runs ranked by {ranking.metric} ({ranking.mode}):")
    print(selection.table(ranking, args.top))
    winner = ranking.runs[0]
    metrics, new = selection.test_once(client, args.tracking_uri, winner, trusted)
    shown = "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
    print(
        f"\nbest run {winner.info.run_id}: {ranking.metric}="
        f"{winner.data.metrics[ranking.metric]:.4f}; {shown}"
        + ("" if new else " (tested before: not evaluated again)")
    )
    if args.no_register:
        return 0
    name = args.name or selection.default_model_name(winner)
    registered = winner.data.tags.get("registered_model", "")
    if registered.startswith(f"{name}/"):
        version = registered.split("/")[-1]
        print(f"already registered as {name} version {version}")
    else:
        version = selection.register(args.tracking_uri, winner, name, trusted)
        print(f"registered {name} version {version} as @{selection.CHAMPION}")
    print(f'load it with mlflow.pytorch.load_model("models:/{name}@{selection.CHAMPION}")')
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """Re-run a run from its stored resolved config (not from today's conf/). The config may
    come from a shared server: it does not extend the trusted targets (`--trust` does)."""
    import hydra
    import yaml
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from hypersweep import trust
    from hypersweep.context import REPRODUCED_FROM_ENV
    from hypersweep.errors import SelectionError
    from hypersweep.hydra_compat import main_kwargs
    from hypersweep.job import main as run_job

    client = _client(args.tracking_uri)
    try:
        source = client.get_run(args.run_id)
    except MlflowException:
        raise SelectionError(
            f"run_id={args.run_id!r}: no such run in {args.tracking_uri}; expected the id of a "
            "run there (the MLflow UI shows it, and `hypersweep best` prints the best one's)"
        ) from None
    experiment = client.get_experiment(source.info.experiment_id).name
    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load(
            Path(
                download_artifacts(
                    run_id=args.run_id,
                    artifact_path="config.yaml",
                    dst_path=tmp,
                    tracking_uri=args.tracking_uri,
                )
            ).read_text()
        )
        config["hypersweep"] = {**config.get("hypersweep", {}), "trusted_targets": args.trust}
        config["tracking"]["uri"] = args.tracking_uri
        config["tracking"]["experiment"] = experiment
        config["defaults"] = ["_self_"]
        config["hydra"] = {
            "run": {"dir": f"outputs/reproduce/{args.run_id}/${{now:%Y-%m-%d_%H-%M-%S}}"},
            "job": {"name": "reproduce"},
        }
        conf_dir = Path(tmp) / "conf"
        conf_dir.mkdir()
        (conf_dir / "reproduce.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        os.environ[REPRODUCED_FROM_ENV] = args.run_id
        sys.argv = ["hypersweep reproduce", *args.overrides]
        whitelist = trust.patterns(args.trust)
        hydra.main(config_path=str(conf_dir), config_name="reproduce", **main_kwargs(whitelist))(
            run_job
        )()
    return 0


def ui(args: argparse.Namespace) -> int:
    """The MLflow UI on this project's store, bound to 127.0.0.1, and the link that opens the
    sweep's runs table (`tracking.view`). Runs until Ctrl-C."""
    import subprocess
    import time
    import urllib.request
    import webbrowser

    from hypersweep import selection
    from hypersweep.tracking import view

    client = _client(args.tracking_uri)
    parent = selection.find_sweep(client, args.sweep)
    if parent is not None:
        path = view.share(client, parent)
    else:  # no sweep yet: the latest experiment's runs
        experiments = client.search_experiments(order_by=["last_update_time DESC"], max_results=1)
        path = view.experiment_path(experiments[0].experiment_id) if experiments else "/"
    base = f"http://127.0.0.1:{args.port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", args.tracking_uri]
    command += ["--host", "127.0.0.1", "--port", str(args.port)]
    if args.tracking_uri.startswith("sqlite:///"):  # the project's artifacts, beside its store
        root = Path(args.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
        command += ["--default-artifact-root", str(root)]
    # Its own process group, stopped as a whole on the way out (Ctrl-C, SIGTERM): the MLflow
    # command runs its web server as a child of its own.
    server = subprocess.Popen(command, start_new_session=True)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    what = f"sweep {parent.info.run_id}" if parent is not None else "runs"
    print(f"MLflow UI at {base} (Ctrl-C stops it); the {what}:\n{base}/#{path}", flush=True)
    try:
        if args.open:
            deadline = time.monotonic() + 60
            while server.poll() is None and time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"{base}/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.3)
            webbrowser.open(f"{base}/#{path}")
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _trust_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module whose classes the stored config may name as _target_ (your model's), "
        "besides torch.optim, hypersweep and Optuna; repeatable",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hypersweep", description=__doc__)
    parser.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("best", help="rank runs on validation, test the best once, register it")
    p.add_argument("--experiment", help="experiment name (default: the latest sweep's)")
    p.add_argument("--sweep", help="a sweep's parent run id or sweep dir")
    p.add_argument(
        "--metric",
        help="best_val_loss, best_val_acc or best_val_rmse (default: the runs' objective)",
    )
    p.add_argument("--top", type=int, default=10, help="rows to print (default 10)")
    p.add_argument("--name", help="registered model name (default: <data>-<model>)")
    p.add_argument("--no-register", action="store_true", help="test, but do not register")
    _trust_option(p)
    p.set_defaults(func=best)
    p = sub.add_parser("ui", help="the MLflow UI on this store, opened on a sweep's runs")
    p.add_argument("--sweep", help="a sweep's parent run id or sweep dir (default: the latest)")
    p.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    p.add_argument("--open", action="store_true", help="open the link in a browser")
    p.set_defaults(func=ui)
    p = sub.add_parser("reproduce", help="re-run a run from its stored config")
    p.add_argument("run_id")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides (changes the run)")
    _trust_option(p)
    p.set_defaults(func=reproduce)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from hypersweep.errors import ConfigError, exit_with

    try:
        return args.func(args)
    except ConfigError as e:  # SelectionError and any bad value: one line, exit status 2
        raise exit_with(e) from None
    finally:
        gc.freeze()  # a cheaper exit: no teardown GC pass over torch's and MLflow's objects


if __name__ == "__main__":
    sys.exit(main())
