"""Training throughput of a learner against the matmul peak measured in the same run; writes ``benchmarks/RESULTS.md``.

    python benchmarks/train_throughput.py                  # the default coin learner on the CPU (fp32)
    python benchmarks/train_throughput.py --preset gpu     # 8 layers x 512 wide, context 256, batch 256, bf16
    python benchmarks/train_throughput.py --set model.n_embd=128 --set train.batch_size=256 --threads 2
    python benchmarks/train_throughput.py --widths 32,64,128,256     # also the same learner at other widths

Measured in one process, one after the other:

1. the matmul peak of this machine: the best of several timed square matmuls
   (``torch.mm``) over a few sizes, fp32 on the CPU, bf16 on a GPU;
2. the learner's training step (forward, backward, clipping, AdamW, exactly
   `learners.train.train_step`) on batches sampled beforehand, so the sampler
   is not timed: tokens/s and model FLOP/s;
3. the same steps fed by the training loop's sampler (`_Prefetcher`, inline on
   the CPU, a background thread on CUDA): tokens/s and, on a GPU, the fraction
   of the time the GPU is busy (union of kernel intervals / span from the first
   kernel to the last, from ``torch.profiler``).

Model FLOPs count matmuls only (PaLM, Chowdhery et al. 2022, appendix B):
``6 · N · tokens`` for the N weights of the matmuls (every ``nn.Linear``, and
the input and hidden matrices of recurrent cells; embeddings are lookups, not
counted), plus ``12 · n_layer · n_embd · T`` per token for attention scores and
their weighted sum (forward and backward, the full T x T square as PaLM counts
it, although a causal kernel needs only about half). Model FLOP utilisation =
model FLOP/s / the matmul peak above.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from provenance import commit, cpu_name  # benchmarks/provenance.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import learners  # noqa: E402  (before torch: sets OMP_WAIT_POLICY and JAX's preallocation)
import torch  # noqa: E402

from learners import TrainConfig  # noqa: E402
from learners.distributed import World  # noqa: E402
from learners.model import SelfAttention  # noqa: E402
from learners.train import _make_optimizer, _Prefetcher, pick_device, resolve_model_config, train_step  # noqa: E402
from learners.train import compiles, training_objective  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DEFAULT_CONFIG = ROOT / "comparisons" / "configs" / "coin_mixture.toml"
ROUNDS = 3  # timed rounds per measurement; the best is kept
GPU_PRESET = {
    "model": {"n_layer": 8, "n_head": 8, "n_embd": 512},
    "train": {"batch_size": 256, "length": 256},
}


# --------------------------------------------------------------------------- provenance and RESULTS.md


def machine() -> str:
    cpu = cpu_name()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu}, {os.cpu_count()} cores visible{gpu}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def provenance(script: str, argv: list[str], device: str) -> list[str]:
    command = f"python benchmarks/{script}" + "".join(f" {a}" for a in argv)
    return [
        f"- date {datetime.now(timezone.utc).isoformat(timespec='seconds')}; commit {commit()}",
        f"- machine: {machine()}; device {device}; load average (1/5/15 min) at the end {load()}",
        f"- command: `{command}`",
    ]


def write_block(name: str, lines: list[str], summary: str) -> None:
    """Replace this benchmark's block ``<!-- name:start -->`` .. ``<!-- name:end -->`` in RESULTS.md.

    The block holds the newest full result and a history of one-line summaries
    of every earlier run (newest first); everything outside it stays as it is.
    """
    begin, end, marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->", "History (newest first):"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Benchmarks\n"
    history: list[str] = []
    if begin in text and end in text:
        old = text[text.index(begin): text.index(end)]
        if marker in old:
            history = [ln for ln in old.split(marker, 1)[1].splitlines() if ln.startswith("- ")]
    block = "\n".join([begin, *lines, "", marker, "", f"- {summary}", *history, "", end])
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------- the learner


def learner_setup(config: Path | None, overrides: list[str], preset: str, device: str, prior=None):
    """(prior, resolved model config, TrainConfig) of an experiment's ``[learner]``, with overrides.

    ``prior`` replaces the experiment's own prior (the learner is then built for it).
    """
    from comparisons.config import load_config
    from comparisons.plan import build_prior

    cfg = load_config(config or DEFAULT_CONFIG)
    prior = build_prior(cfg) if prior is None else prior
    model_values = dict(cfg.learner.model)
    train_values = {**cfg.learner.training, "device": device}
    if preset == "gpu":
        model_values, train_values = {**GPU_PRESET["model"]}, {**train_values, **GPU_PRESET["train"]}
    for item in overrides:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if section not in ("model", "train") or not name:
            raise SystemExit(f"--set {item!r}: expected model.NAME=VALUE or train.NAME=VALUE")
        (model_values if section == "model" else train_values)[name] = _literal(raw)
    # transformer, rnn or pfn, as comparisons/run.py picks it
    architecture = cfg.learner.architecture or prior.data_kind.default_architecture
    model_cfg = learners.architecture_config(architecture).from_dict(model_values)
    train_cfg = TrainConfig.from_dict(train_values)
    return prior, resolve_model_config(prior, model_cfg, train_cfg), train_cfg


def _literal(raw: str):
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def matmul_weights(model: torch.nn.Module) -> int:
    """Weights that enter matmuls: every ``nn.Linear`` weight and recurrent cells' input and hidden matrices."""
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            total += module.weight.numel()
        elif isinstance(module, torch.nn.RNNBase):
            total += sum(p.numel() for name, p in module.named_parameters() if name.startswith("weight_"))
    return total


def flops_per_token(model: torch.nn.Module, length: int) -> float:
    """Training FLOPs per token: 6 N + 12 n_layer n_embd T (attention, transformers only)."""
    flops = 6.0 * matmul_weights(model)
    config = model.config
    if any(isinstance(m, SelfAttention) for m in model.modules()):
        flops += 12.0 * config.n_layer * config.n_embd * length
    return flops


# --------------------------------------------------------------------------- timings


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, *, seconds: float = 3.0) -> tuple[float, str]:
    """Best FLOP/s of square ``torch.mm`` over a few sizes (fp32 on the CPU, bf16 on CUDA), and a description."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = (4096, 8192, 16384) if device.type == "cuda" else (256, 512, 1024, 2048)
    generator = torch.Generator(device=device).manual_seed(0)
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up
        synchronize(device)
        deadline = time.perf_counter() + seconds / len(sizes)
        reps = 0
        while time.perf_counter() < deadline or reps < 3:
            t0 = time.perf_counter()
            repeats = 10 if device.type == "cuda" else 1
            for _ in range(repeats):
                torch.mm(a, b, out=out)
            synchronize(device)
            rate = 2.0 * n**3 * repeats / (time.perf_counter() - t0)
            if rate > best:
                best, best_n = rate, n
            reps += 1
    kind = "bf16" if dtype == torch.bfloat16 else "fp32"
    return best, f"{kind} torch.mm, best over sizes {list(sizes)} (best at n = {best_n})"


def time_steps(objective, optimizer, model, batches, cfg, device, autocast, *, steps: int, warmup: int, get=None,
               rounds: int = 3):
    """Seconds per training step: the best of ``rounds`` rounds of ``steps`` timed steps, after ``warmup`` untimed.

    The best round is the one least disturbed by other processes on a shared machine. ``batches`` is a list
    cycled through (sampling excluded), or ``get(step)`` supplies each step's batch.
    """
    world = World()
    fetch = get if get is not None else (lambda s: batches[s % len(batches)])
    for s in range(warmup):
        train_step(objective, optimizer, model, fetch(s), s, cfg, autocast, world)
    best, s = float("inf"), warmup
    for _ in range(rounds):
        synchronize(device)
        t0 = time.perf_counter()
        for s in range(s, s + steps):
            last = train_step(objective, optimizer, model, fetch(s), s, cfg, autocast, world)
        s += 1
        float(last)  # waits for the device
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def gpu_busy_fraction(objective, optimizer, model, prefetcher, cfg, device, autocast, first: int, steps: int) -> float:
    """Union of CUDA kernel intervals / span from the first kernel to the last, over ``steps`` steps with sampling."""
    from torch.profiler import ProfilerActivity, profile

    world = World()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for s in range(first, first + steps):
            train_step(objective, optimizer, model, prefetcher.get(s), s, cfg, autocast, world)
        synchronize(device)
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    if not spans:
        return float("nan")
    busy, (cur_start, cur_end) = 0.0, spans[0]
    for start, end in spans[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    return busy / (spans[-1][1] - spans[0][0])


def measure(prior, model_cfg, cfg: TrainConfig, device: torch.device, *, steps: int, warmup: int,
            busy: bool = False, sampled: bool = True) -> dict:
    """Throughput of training steps without and (with ``sampled``) with sampling; see the module docstring."""
    model = learners.build_model(model_cfg, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    import jax

    model.fit_to_prior(prior, jax.random.key(cfg.seed), cfg)  # the PFN's buckets; the token learners fit nothing
    model.train()
    optimizer = _make_optimizer(model, cfg, device)
    objective = training_objective(model, cfg, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    inline = _Prefetcher(prior, replace(cfg, prefetch=0), 0, device)
    batches = [inline.batch(s) for s in range(min(8, warmup + steps))]
    load_before = load()
    step_s = time_steps(objective, optimizer, model, batches, cfg, device, autocast, steps=steps, warmup=warmup,
                        rounds=ROUNDS)
    load_after = load()
    tokens = cfg.batch_size * cfg.length
    out = {
        "num_parameters": model.num_parameters(),
        "matmul_weights": matmul_weights(model),
        "flops_per_token": flops_per_token(model, cfg.length),
        "tokens_per_step": tokens,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "episodes_per_s": cfg.batch_size / step_s,
        "model_flops": flops_per_token(model, cfg.length) * tokens / step_s,
        "load": f"{load_before} -> {load_after}",
    }
    out["compiled"] = compiles(cfg, device)
    out["threads"] = torch.get_num_threads() if device.type == "cpu" else None
    if not sampled:
        return out
    with_sampler = _Prefetcher(prior, cfg, 0, device)
    try:
        sampled_s = time_steps(objective, optimizer, model, None, cfg, device, autocast, steps=steps, warmup=warmup,
                               get=with_sampler.get, rounds=ROUNDS)
        out["sampled_tokens_per_s"] = tokens / sampled_s
        if busy and device.type == "cuda":  # the sampler's next steps, profiled (cfg.steps leaves room for them)
            out["gpu_busy"] = gpu_busy_fraction(objective, optimizer, model, with_sampler, cfg, device, autocast,
                                                warmup + ROUNDS * steps, steps)
    finally:
        with_sampler.close()
    return out


def describe(model_cfg, cfg: TrainConfig) -> str:
    fields = ("n_layer", "n_head", "n_embd", "mlp_ratio", "cell", "hidden")
    values = model_cfg.to_dict()
    arch = ", ".join(f"{f}={values[f]}" for f in fields if f in values)
    return f"{type(model_cfg).__name__}({arch}), batch {cfg.batch_size} x length {cfg.length}"


def width_table(prior, model_cfg, cfg: TrainConfig, device, widths: list[int], peak: float, *, steps: int,
                warmup: int) -> list[str]:
    """Rows of model FLOP utilisation of the same learner at other widths (``n_embd``), against the same peak."""
    heads = f"{model_cfg.n_head} heads, " if "n_head" in model_cfg.to_dict() else ""
    rows = ["", f"Model FLOP utilisation against width (`--widths`): the learner above with `n_embd` changed (the "
                f"same {heads}batch and length), batches sampled beforehand, against the peak above.", "",
            "| n_embd | parameters | FLOPs per token | step (ms) | tokens/s | model GFLOP/s | MFU | load average |",
            "|---|---|---|---|---|---|---|---|"]
    for width in widths:
        got = measure(prior, replace(model_cfg, n_embd=width), cfg, device, steps=steps, warmup=warmup,
                      sampled=False)
        rows.append(f"| {width} | {got['num_parameters']:,} | {got['flops_per_token']:,.0f} | "
                    f"{got['step_s'] * 1e3:.2f} | {got['tokens_per_s']:,.0f} | {got['model_flops'] / 1e9:,.2f} | "
                    f"{100 * got['model_flops'] / peak:.1f} % | {got['load']} |")
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     epilog="Model FLOPs: see the module docstring.")
    parser.add_argument("--preset", choices=("coin", "gpu"), default="coin",
                        help="coin: the [learner] of --config (default: the two-coin experiment); gpu: an 8-layer, "
                             "512-wide causal transformer at context 256 and batch 256 (bf16 on CUDA)")
    parser.add_argument("--config", type=Path, default=None, help="experiment TOML whose [learner] is measured")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="override model.NAME or train.NAME, e.g. --set model.n_embd=128")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per round, best of {ROUNDS} rounds (default 20 on the CPU, 50 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; 15 with compile)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU; default torch's own)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile the step")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="run the step eagerly")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--attention", choices=("auto", "kernel"), default="auto",
                        help="auto: masked attention at short contexts runs explicitly on the CPU (learners.model."
                             "attend); kernel: always F.scaled_dot_product_attention, to compare")
    parser.add_argument("--name", default=None, help="RESULTS.md block (default train_throughput[_gpu])")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    parser.add_argument("--widths", default=None, metavar="C1,C2,...",
                        help="also time the same learner at these widths (model.n_embd, same heads, batch and "
                             "length; no sampler) against the same peak, e.g. --widths 32,64,128,256")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.attention == "kernel":
        learners.model.EXPLICIT_MASKED_ATTENTION_MAX_T = 0  # `attend` reads it at every call
    prior, model_cfg, cfg = learner_setup(args.config, args.set, args.preset, args.device)
    if args.compile is not None:
        cfg = replace(cfg, compile=args.compile)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    steps = args.steps or (50 if device.type == "cuda" else 20)
    warmup = args.warmup if args.warmup is not None else (15 if compiles(cfg, device) else 5)
    # enough scheduled steps that the learning rate stays in range while timing; nothing is trained to completion
    cfg = replace(cfg, steps=max(cfg.steps, 2 * (warmup + (ROUNDS + 1) * steps)))

    load_start = load()
    peak, peak_how = matmul_peak(device)
    load_peak = load()
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s ({peak_how}; load {load_start} -> {load_peak})", flush=True)
    got = measure(prior, model_cfg, cfg, device, steps=steps, warmup=warmup, busy=device.type == "cuda")
    mfu = got["model_flops"] / peak
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    threads = f", {got['threads']} torch threads" if got["threads"] else ""
    lines = [
        f"### Training throughput: {describe(model_cfg, cfg)} on {device.type} ({precision}{threads}"
        f"{', torch.compile' if got['compiled'] else ''}"
        f"{', attention through the SDPA kernel' if args.attention == 'kernel' else ''})",
        "",
        f"Prior `{prior.name}`; {got['num_parameters']:,} parameters, {got['matmul_weights']:,} in matmuls; "
        f"model FLOPs per token {got['flops_per_token']:,.0f} (6 N + 12 L C T); best of {ROUNDS} rounds of "
        f"{steps} timed steps after {warmup}.",
        "",
        "| quantity | value | load average (1/5/15) |",
        "|---|---|---|",
        f"| matmul peak ({peak_how}) | {peak / 1e9:,.1f} GFLOP/s | {load_start} -> {load_peak} |",
        f"| training step, batches sampled beforehand | {got['step_s'] * 1e3:.2f} ms | {got['load']} |",
        f"| tokens/s (episodes/s) | {got['tokens_per_s']:,.0f} ({got['episodes_per_s']:,.0f}) | |",
        f"| model FLOP/s | {got['model_flops'] / 1e9:,.2f} GFLOP/s | |",
        f"| **model FLOP utilisation (model FLOP/s / matmul peak)** | **{100 * mfu:.1f} %** | |",
        f"| tokens/s with the training loop's sampler | {got['sampled_tokens_per_s']:,.0f} | {load()} |",
    ]
    if "gpu_busy" in got:
        lines.append(f"| GPU busy (kernel time / span, with the sampler) | {100 * got['gpu_busy']:.1f} % | |")
    if args.widths:
        lines += width_table(prior, model_cfg, cfg, device, [int(w) for w in args.widths.split(",")], peak,
                             steps=steps, warmup=warmup)
    print("\n".join(lines), flush=True)
    if not args.no_write:
        name = args.name or ("train_throughput_gpu" if args.preset == "gpu" else "train_throughput")
        how = (", torch.compile" if got["compiled"] else "") + (", SDPA kernel" if args.attention == "kernel" else "")
        summary = (f"{datetime.now(timezone.utc).date()} {describe(model_cfg, cfg)}, {device.type}{threads}{how}: "
                   f"{got['tokens_per_s']:,.0f} tokens/s, {got['model_flops'] / 1e9:,.2f} GFLOP/s = {100 * mfu:.1f} % "
                   f"of {peak / 1e9:,.1f} GFLOP/s; load {got['load']}")
        write_block(name, lines + [""] + provenance("train_throughput.py", argv, str(device)), summary)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
