"""PyTorch training benchmark: time to the same test accuracy, ours vs TorchDistributor vs one process.

    python bench/bench_torch.py                 # the issue's workload: 200k × 50, 10 classes
    python bench/bench_torch.py --rows 20000    # a smoke run

Workload (the issue's): synthetic 50 features, 10 classes from a fixed random teacher network,
an MLP 50→128→64→10, Adam (lr 1e-3), batch 256, 2 cores.

* single process: plain torch, shuffled mini-batches, torch's own thread pool;
* TorchDistributor: ``pyspark.ml.torch.distributor.TorchDistributor(num_processes=2,
  local_mode=True, use_gpu=False)``, DDP over gloo, each process reading its half of the rows;
* ours: ``TorchClassifier`` on local[2], ``localSteps`` chosen so an epoch is at most
  ``--jobs-per-epoch`` Spark jobs (each task takes that many Adam steps on its own block, the
  driver averages parameters and Adam state), stepSize 1e-3 × partitions (linear scaling:
  the average of the replicas' steps acts like one step on a batch of 256 × partitions).

The target accuracy is what the single process reaches after ``--epochs`` epochs (less
``--slack``).  Each method's time to target counts everything a user waits for: for ours the
fit from the DataFrame (block build included; each candidate epoch count is a separate fit from
scratch), for TorchDistributor the whole ``run()`` up to the end of the first epoch at target
(start-up included).  Targets (the issue's): ours ≤ 0.5× TorchDistributor, ≤ 2× single process.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SEED = 7
D, K = 50, 10
HIDDEN = [128, 64]
LR = 1e-3
BATCH = 256


def make_data(rows: int, test_rows: int):
    """Features and labels from a fixed random teacher (a small tanh network plus noise)."""
    rng = np.random.default_rng(SEED)
    W1 = rng.normal(size=(D, 32)) / np.sqrt(D)
    W2 = rng.normal(size=(32, K)) / np.sqrt(32) * 3.0
    X = rng.normal(size=(rows + test_rows, D)).astype(np.float32)
    logits = np.tanh(X @ W1) @ W2 + 0.5 * rng.normal(size=(rows + test_rows, K))
    y = logits.argmax(axis=1).astype(np.int64)
    return X[:rows], y[:rows], X[rows:], y[rows:]


def mlp(seed: int):
    from sparkml_aiaas.core.torch_nets import build_network

    return build_network({"type": "mlp", "input_size": D, "hidden_layers": HIDDEN,
                          "output_size": K}, seed=seed)


def accuracy(net, X, y) -> float:
    import torch

    with torch.inference_mode():
        return float((net(torch.from_numpy(X)).argmax(1).numpy() == y).mean())


# --------------------------------------------------------------------------- single process
def single_process(X, y, Xt, yt, epochs: int):
    import torch

    net = mlp(SEED)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    Xt_, yt_ = torch.from_numpy(X), torch.from_numpy(y)
    g = torch.Generator().manual_seed(SEED)
    history = []
    trained = 0.0  # training time only: the per-epoch evaluation is not counted
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(y), generator=g)
        for s in range(0, len(y), BATCH):
            idx = perm[s:s + BATCH]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(Xt_[idx]), yt_[idx]).backward()
            opt.step()
        trained += time.perf_counter() - start
        history.append((trained, accuracy(net, Xt, yt)))
    return history


# --------------------------------------------------------------------------- TorchDistributor
def ddp_train(data_path: str, epochs: int, t0: float):
    """Runs in each torchrun process: DDP over gloo on this rank's half of the rows."""
    import time

    import numpy as np
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    data = np.load(data_path)
    X, y, Xt, yt = data["X"], data["y"], data["Xt"], data["yt"]
    X, y = X[rank::world], y[rank::world]
    torch.manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(50, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xs, ys = torch.from_numpy(X), torch.from_numpy(y)
    g = torch.Generator().manual_seed(7 + rank)
    history = []
    steps = len(y) // 128  # each rank takes 128 rows of the global batch of 256
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for s in range(steps):
            idx = perm[s * 128:(s + 1) * 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(Xs[idx]), ys[idx]).backward()
            opt.step()
        # Every rank evaluates (the replicas are identical under DDP): which rank's return
        # value TorchDistributor hands back differs between modes.
        with torch.inference_mode():
            acc = float((net(torch.from_numpy(Xt)).argmax(1).numpy() == yt).mean())
        history.append((time.time() - t0, acc))
    dist.destroy_process_group()
    return history


def torch_distributor(X, y, Xt, yt, epochs: int, workdir: str):
    from pyspark.ml.torch.distributor import TorchDistributor

    path = os.path.join(workdir, "ddp_data.npz")
    np.savez(path, X=X, y=y, Xt=Xt, yt=yt)
    t0 = time.time()
    history = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(
        ddp_train, path, epochs, t0)
    return history, time.time() - t0


# --------------------------------------------------------------------------- ours
def spark_frame(spark, X, y, workdir: str):
    import pandas as pd

    path = os.path.join(workdir, "train.parquet")
    frame = pd.DataFrame(X.astype(np.float64), columns=[f"x{j}" for j in range(D)])
    frame["label"] = y.astype(np.float64)
    half = len(frame) // 2
    os.makedirs(path, exist_ok=True)
    frame.iloc[:half].to_parquet(os.path.join(path, "part-0.parquet"))
    frame.iloc[half:].to_parquet(os.path.join(path, "part-1.parquet"))
    return spark.read.parquet(path)


def ours(spark, frame, Xt, yt, epochs: int, jobs_per_epoch: int, lr: float,
         stop_at: float = None):
    from sparkml_aiaas.models import TorchClassifier

    rows = frame.count()
    partitions = spark.sparkContext.defaultParallelism
    local_steps = max(1, math.ceil(rows / (BATCH * partitions * jobs_per_epoch)))
    history = []
    for e in range(1, epochs + 1):
        start = time.perf_counter()
        model = TorchClassifier(featuresCols=[f"x{j}" for j in range(D)], hiddenLayers=HIDDEN,
                                numClasses=K, optimizer="adam", stepSize=lr, batchSize=BATCH,
                                localSteps=local_steps, maxEpochs=e, seed=SEED).fit(frame)
        elapsed = time.perf_counter() - start
        acc = accuracy(model.network(), Xt, yt)
        history.append((elapsed, acc))
        print(f"  ours: {e} epoch(s) in {elapsed:.2f} s ({model.summary.numJobs} jobs, "
              f"localSteps {local_steps}, blocks {model.summary.blockBuildSeconds:.2f} s): "
              f"accuracy {acc:.4f}", flush=True)
        if stop_at is not None and acc >= stop_at:
            break
    return history, local_steps


def time_to(history, target):
    for elapsed, acc in history:
        if acc >= target:
            return elapsed
    return float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--test-rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3,
                        help="single-process epochs that set the target accuracy")
    parser.add_argument("--max-epochs", type=int, default=8,
                        help="epochs ours and TorchDistributor may take to reach it")
    parser.add_argument("--slack", type=float, default=0.005,
                        help="target = single-process accuracy − slack")
    parser.add_argument("--jobs-per-epoch", type=int, default=1)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--lr-ours", type=float, default=None,
                        help="ours' Adam step (default: 1e-3 × partitions, the linear scaling "
                             "rule: averaging the partitions' replicas acts like a batch of "
                             "256 × partitions)")
    parser.add_argument("--skip-distributor", action="store_true")
    args = parser.parse_args(argv)

    X, y, Xt, yt = make_data(args.rows, args.test_rows)
    print(f"data: {args.rows} × {D} training rows, {args.test_rows} test rows, {K} classes",
          flush=True)
    single = single_process(X, y, Xt, yt, args.max_epochs)
    target = single[min(args.epochs, len(single)) - 1][1] - args.slack
    per_epoch = single[0][0]
    print(f"single process: {per_epoch:.2f} s/epoch; accuracy by epoch "
          f"{[round(a, 4) for _, a in single]}; target {target:.4f}", flush=True)

    from sparkml_aiaas.session import get_spark

    spark = get_spark("bench_torch", master=args.master)
    with tempfile.TemporaryDirectory(prefix="bench_torch-") as workdir:
        frame = spark_frame(spark, X, y, workdir)
        lr_ours = args.lr_ours or LR * spark.sparkContext.defaultParallelism
        print(f"ours: Adam stepSize {lr_ours:g}", flush=True)
        history, local_steps = ours(spark, frame, Xt, yt, args.max_epochs, args.jobs_per_epoch,
                                    lr_ours, stop_at=target)
        t_ours = time_to(history, target)
        t_single = time_to(single, target)
        results = {"single process": t_single, "ours": t_ours}
        if not args.skip_distributor:
            td_history, td_total = torch_distributor(X, y, Xt, yt, args.max_epochs, workdir)
            print(f"TorchDistributor: {args.max_epochs} epochs in {td_total:.2f} s; accuracy by "
                  f"epoch {[round(a, 4) for _, a in td_history]}; epoch ends at "
                  f"{[round(t, 1) for t, _ in td_history]} s", flush=True)
            results["TorchDistributor"] = time_to(td_history, target)
    print()
    print(f"time to test accuracy ≥ {target:.4f} ({args.rows} rows):")
    for name, seconds in results.items():
        print(f"  {name:18s} {seconds:8.2f} s")
    if "TorchDistributor" in results:
        print(f"ours / TorchDistributor = {t_ours / results['TorchDistributor']:.2f}  (target ≤ 0.5)")
    print(f"ours / single process   = {t_ours / t_single:.2f}  (target ≤ 2)")
    spark.stop()


if __name__ == "__main__":
    main()
