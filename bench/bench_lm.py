"""Benchmark: the engine's language-model training against a plain loop, and the fused linear β-loss's memory.

1. **Throughput.** The engine's step loop (:class:`gdsoftmax.engine.loop.one_model.OneModelRun` of the next-token
   task, a round of ``--steps`` steps) against a plain nanoGPT-style loop written here (random windows, the same
   GPT, AdamW, ``F.cross_entropy``, clipping, the same learning-rate schedule by formula), at the anchor's settings
   (configs/shakespeare_char.toml: batch 12, context 64, 4 x 128). Each measurement runs in a fresh process;
   the two alternate for ``--repeats`` rounds; the table gives median tokens/s and the engine / plain ratio of
   each round (median, min, max).
2. **Memory.** The peak extra resident memory of one training step (forward and backward of the GPT and the loss)
   with ``loss.fused_linear`` against logits + β-loss, at a vocabulary where the logits dominate
   (``--vocab``, 4,096 tokens a step), each in a fresh process whose high-water mark is reset once the model
   and batch exist (Linux /proc).

    python bench/bench_lm.py        # writes bench/results/lm.{json,md}; ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

SETUP = """
import math, sys, time, torch
import torch.nn.functional as F
from gdsoftmax.engine.config.schema import load_config
from gdsoftmax.engine.data.text import TextData
torch.manual_seed(0)
config = load_config("configs/shakespeare_char.toml", ["train.iterations={steps}", "train.eval_every={steps}"])
text = "".join(chr(65 + (i * 7919) % 58) for i in range(300_000))  # 58 symbols, deterministic
data = TextData.from_text(text, context=config.data.context)
"""

ENGINE = SETUP + """
from gdsoftmax.engine.loop.distributed import Distributed
from gdsoftmax.engine.loop.one_model import OneModelRun
from gdsoftmax.engine.tasks.tokens import NextTokenPrediction
run = OneModelRun(NextTokenPrediction(), config, data, Distributed(0, 1, torch.device("cpu")), {steps}, "fp32")
start = time.perf_counter()
run.train_epoch(0)
print(time.perf_counter() - start)
"""

PLAIN = SETUP + """
from gdsoftmax.engine.models.transformer import gpt
t = config.train
model = gpt((64,), data.num_classes)
decay = [p for p in model.parameters() if p.dim() >= 2]
optimizer = torch.optim.AdamW([{{"params": decay, "weight_decay": 0.1}},
                               {{"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}}],
                              lr=t.lr, betas=(0.9, 0.99))
def lr_at(it):  # nanoGPT's schedule: linear warm-up, then cosine to min_lr
    if it < t.warmup_steps:
        return t.lr * (it + 1) / (t.warmup_steps + 1)
    ratio = (it - t.warmup_steps) / max(1, {steps} - t.warmup_steps)
    return t.min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (t.lr - t.min_lr)
stream, generator = data.train.tokens, torch.Generator().manual_seed(0)
start = time.perf_counter()
for it in range({steps}):
    for group in optimizer.param_groups:
        group["lr"] = lr_at(it)
    offsets = torch.randint(len(stream) - 64, (12,), generator=generator)
    x = torch.stack([stream[o : o + 64] for o in offsets])
    y = torch.stack([stream[o + 1 : o + 65] for o in offsets])
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
print(time.perf_counter() - start)
"""

MEMORY = """
import torch
from gdsoftmax.engine.config.schema import parse_config
from gdsoftmax.engine.tasks.tokens import FlatTokens, _objective
from gdsoftmax.engine.models.transformer import gpt
def status(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024
torch.manual_seed(0)
vocab, batch, context = {vocab}, 16, 256
config = parse_config({{"data": {{"dataset": "tinyshakespeare", "context": context}}, "model": {{"name": "gpt"}},
                       "train": {{"iterations": 1, "eval_every": 1}},
                       "loss": {{"beta": 0.5, "fused_linear": {fused}}}}})
model = gpt((context,), vocab)
flat = FlatTokens(model)
objective = _objective(config, flat, 1)
x, y = torch.randint(vocab, (batch, context)), torch.randint(vocab, (batch * context,))
open('/proc/self/clear_refs', 'w').write('5')
before = status('VmRSS')
loss, _ = objective(flat, x, y, 0)
loss.backward()
print(status('VmHWM') - before)
"""


def fresh(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    return float(out.split()[-1])


def throughput(steps: int, repeats: int) -> dict:
    tokens = steps * 12 * 64
    seconds = {"engine": [], "plain loop": []}
    for _ in range(repeats):
        seconds["engine"].append(fresh(ENGINE.format(steps=steps)))
        seconds["plain loop"].append(fresh(PLAIN.format(steps=steps)))
    ratios = [p / e for e, p in zip(seconds["engine"], seconds["plain loop"], strict=True)]  # engine tokens/s / plain
    return {"steps": steps, "tokens_per_step": 12 * 64, "repeats": repeats,
            **{f"{k} tokens/s": statistics.median(tokens / s for s in v) for k, v in seconds.items()},
            "seconds": seconds, "ratio": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios)}


def memory(vocab: int, repeats: int) -> dict:
    peaks = {"logits + β-loss": [], "fused linear β-loss": []}
    for _ in range(repeats):
        peaks["logits + β-loss"].append(fresh(MEMORY.format(vocab=vocab, fused=False)))
        peaks["fused linear β-loss"].append(fresh(MEMORY.format(vocab=vocab, fused=True)))
    savings = [1 - f / b for f, b in zip(peaks["fused linear β-loss"], peaks["logits + β-loss"], strict=True)]
    return {"vocab": vocab, "tokens": 16 * 256, "repeats": repeats,
            **{f"{k} GB": statistics.median(v) / 1e9 for k, v in peaks.items()}, "peaks": peaks,
            "saving": statistics.median(savings), "saving_min": min(savings), "saving_max": max(savings)}


def table(result: dict) -> str:
    t, m = result["throughput"], result["memory"]
    return "\n".join([
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, float32.", "",
        f"**Throughput** (the anchor's settings: GPT 4 x 128, batch 12, context 64; {t['steps']} steps per "
        f"measurement, {t['repeats']} alternating fresh processes each):", "",
        "| loop | median tokens/s |", "|---|---|",
        f"| plain nanoGPT-style loop | {t['plain loop tokens/s']:.0f} |",
        f"| engine (OneModelRun, next-token task) | {t['engine tokens/s']:.0f} |", "",
        f"Engine / plain: **{t['ratio']:.3f}** (median of the rounds' ratios; min {t['ratio_min']:.3f}, max "
        f"{t['ratio_max']:.3f}).", "",
        f"**Memory of one training step** (GPT 4 x 128, vocabulary {m['vocab']:,}, {m['tokens']:,} tokens; peak "
        f"extra resident memory, medians of {m['repeats']} fresh processes):", "",
        "| loss | peak extra memory |", "|---|---|",
        f"| logits + β-loss | {m['logits + β-loss GB']:.2f} GB |",
        f"| fused linear β-loss | {m['fused linear β-loss GB']:.2f} GB |", "",
        f"Saving: **{100 * m['saving']:.0f} %** (min {100 * m['saving_min']:.0f} %, "
        f"max {100 * m['saving_max']:.0f} %).",
        ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    result = {"throughput": throughput(args.steps, args.repeats), "memory": memory(args.vocab, 3)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm.json").write_text(json.dumps(result, indent=1))
    (out / "lm.md").write_text(table(result))
    print(table(result))


if __name__ == "__main__":
    main()
