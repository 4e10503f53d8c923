"""Batch-1 latency of the default DSRL policy: onnxruntime vs torch eager, one thread each.

The policy is the default architecture (latent actor + 5-step DDIM over the residual
MLP denoiser + unnormalization). With ``--run`` a trained DSRL run is used; without,
the same architecture with freshly initialized weights (latency does not depend on
the weights). Both are timed in the same process, interleaved in rounds.

    python bench/export.py --repeats 5 --calls 2000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from benchlib import write_results  # noqa: E402  (bench/ is on sys.path when run as a script)
import torch

ROOT = Path(__file__).resolve().parent


def default_run(work: Path) -> Path:
    """A DSRL run directory with the default architecture and untrained weights."""
    from steer.agent.bc import BCConfig, build_policy
    from steer.agent.dsrl import DSRLConfig
    from steer.agent.dsrl.latent_actor import LatentActor, LatentActorConfig, save_dsrl_policy

    torch.manual_seed(0)
    obs = np.random.default_rng(0).uniform(-0.3, 0.3, (64, 10)).astype(np.float32)
    chunks = np.random.default_rng(1).uniform(-0.3, 0.3, (64, 4, 2)).astype(np.float32)
    policy = build_policy(BCConfig(), obs, chunks)
    d = DSRLConfig()
    actor = LatentActor(LatentActorConfig(10, policy.cfg.noise_dim, d.hidden_dim, d.num_layers, d.layer_norm,
                                          d.latent_noise_bound))
    save_dsrl_policy(work / "checkpoints", actor, policy, {"task": "steer/PlanarPush-v0", "control_rate_hz": 20.0})
    return work


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    import onnxruntime as ort

    from steer.agent.export import export_run, parity, torch_policy

    torch.set_num_threads(1)
    run = args.run or default_run(Path("runs/bench-export"))
    onnx_path = run / "bench_policy.onnx"
    export_run(run, onnx_path)
    diff = parity(run, onnx_path)
    graph, _ = torch_policy(run)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    obs = rng.uniform(-0.2, 0.2, (args.calls, 1, 10)).astype(np.float32)

    def time_onnx() -> list[float]:
        out = []
        for o in obs:
            t = time.perf_counter()
            sess.run(["action"], {"obs": o})
            out.append(time.perf_counter() - t)
        return out

    def time_torch() -> list[float]:
        out = []
        with torch.inference_mode():
            for o in obs:
                t = time.perf_counter()
                graph(torch.from_numpy(o))
                out.append(time.perf_counter() - t)
        return out

    time_onnx(), time_torch()  # warm-up
    per = {"onnx_p50_ms": [], "onnx_p99_ms": [], "torch_p50_ms": [], "torch_p99_ms": []}
    for _ in range(args.repeats):
        for name, fn in (("onnx", time_onnx), ("torch", time_torch)):
            s = fn()
            per[f"{name}_p50_ms"].append(percentile_ms(s, 50))
            per[f"{name}_p99_ms"].append(percentile_ms(s, 99))
    figures = {k: float(np.median(v)) for k, v in per.items()}
    figures["speedup"] = figures["torch_p50_ms"] / figures["onnx_p50_ms"]
    figures["max_abs_diff"] = diff
    print(f"{'':<8}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("onnx", "torch"):
        print(f"{name:<8}{figures[f'{name}_p50_ms']:>10.3f}{figures[f'{name}_p99_ms']:>10.3f}")
    print(f"speedup (torch p50 / onnx p50): {figures['speedup']:.1f}x; max |onnx - torch| = {diff:.1e}")
    write_results(ROOT / "results" / "export.json", figures,
                  {"repeats": per, "calls_per_repeat": args.calls, "run": str(run), "threads": 1,
                   "onnxruntime": ort.__version__, "torch": torch.__version__})


if __name__ == "__main__":
    main()
