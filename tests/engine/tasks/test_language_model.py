"""Language models in the engine: the GPT model, token-stream data and tokenizers, a text run's
training, resumption and evaluation, and the exact errors for bad input. Tiny corpora and models:
the real Tiny Shakespeare runs belong to the study, not to the tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import interrupted_at_epoch
from gdsoftmax.engine.config.schema import ConfigError, parse_config
from gdsoftmax.engine.data.checks import DataIntegrityError
from gdsoftmax.engine.data.images import DataNotFoundError
from gdsoftmax.engine.data.text import TextData, load_text, train_bpe
from gdsoftmax.engine.loop.trainer import run_experiment
from gdsoftmax.engine.models.transformer import gpt
from gdsoftmax.engine.rundir.checkpoint import load_checkpoint
from gdsoftmax.engine.rundir.records import RunMismatchError
from gdsoftmax.engine.tasks.tokens import FlatTokens, _objective, text_scores
from recompute import paired_p_values, paired_verdicts

SHAKESPEARE = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "tinyshakespeare" / "input.txt"
CORPUS = "".join(f"{who}: the {what} is {how}.\n" for who in ("ROMEO", "JULIET", "NURSE", "FRIAR")
                 for what in ("moon", "sun", "night", "day", "rose") for how in ("fair", "dark", "sweet", "gone"))


def text_config(corpus: Path, **train) -> dict:
    return {"name": "lm", "seed": 3, "data": {"dataset": f"text:{corpus}", "context": 16},
            "model": {"name": "gpt", "options": {"n_layer": 1, "n_head": 2, "n_embd": 16}},
            "train": {"iterations": 12, "eval_every": 4, "batch_size": 4, "optimizer": "adamw", "lr": 3e-3,
                      "weight_decay": 0.1, "lr_schedule": "cosine", "min_lr": 3e-4, "warmup_steps": 2,
                      "grad_clip": 1.0, "record_epochs": [1], **train}}


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    return path


# ---- the model ------------------------------------------------------------------------------------


def test_gpt_is_causal_and_ties_its_output_layer_to_the_embedding():
    torch.manual_seed(0)
    model = gpt((12,), 20, n_layer=2, n_head=2, n_embd=16).eval()
    tokens = torch.randint(20, (3, 12))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 20  # only positions 7.. differ
    a, b = model(tokens), model(changed)
    assert a.shape == (3, 12, 20)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    assert model.classifier.weight is model.token_embedding.weight


def test_gpt_refuses_a_window_longer_than_its_block_size():
    with pytest.raises(ValueError, match="a window of 9 tokens is longer than the model's block_size 8"):
        gpt((8,), 5, n_layer=1, n_head=1, n_embd=8)(torch.zeros(1, 9, dtype=torch.long))


def test_weight_decay_goes_to_matrices_only():
    model = gpt((8,), 5, n_layer=1, n_head=1, n_embd=8, bias=True)
    decayed, plain = model.optimizer_groups(0.1)
    assert decayed["weight_decay"] == 0.1
    assert plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


# ---- data and tokenizers --------------------------------------------------------------------------


def test_the_split_is_by_characters_and_tokens_decode_back():
    data = TextData.from_text(CORPUS, context=8, val_size=0.1)
    n_train = int(len(CORPUS) * 0.9)
    assert len(data.train) == n_train
    assert len(data.val) == len(CORPUS) - n_train
    assert data.decode(data.train.tokens.tolist()) + data.decode(data.val.tokens.tolist()) == CORPUS
    assert data.num_classes == len(set(CORPUS))


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="Tiny Shakespeare is not beside the project")
def test_tiny_shakespeare_splits_as_nanogpt_does():
    data = load_text("tinyshakespeare", SHAKESPEARE.parents[1], context=64, download=False)
    assert (len(data.train), len(data.val), data.num_classes) == (1_003_854, 111_540, 65)


def test_bpe_is_trained_on_the_training_split_only_and_is_deterministic():
    text = CORPUS + "zzyzx " * 200  # a word only the validation part has
    a = TextData.from_text(text, context=8, val_size=0.3, tokenizer="bpe", vocab_size=300)
    b = TextData.from_text(text, context=8, val_size=0.3, tokenizer="bpe", vocab_size=300)
    assert a.fingerprint() == b.fingerprint()
    assert "zzyzx" not in a.tokenizer.tokenizer.get_vocab()
    assert "Ġthe" in a.tokenizer.tokenizer.get_vocab()
    assert a.decode(a.val.tokens.tolist()) == text[int(len(text) * 0.7) :]


def test_a_missing_corpus_and_a_corpus_that_is_not_utf8_get_one_line_naming_the_file(tmp_path):
    with pytest.raises(DataNotFoundError, match=f"the corpus {tmp_path / 'nope.txt'} does not exist"):
        load_text(f"text:{tmp_path / 'nope.txt'}", context=4)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    with pytest.raises(DataIntegrityError, match=f"{latin} is not UTF-8 text .* at byte 3"):
        load_text(f"text:{latin}", context=4)
    with pytest.raises(DataNotFoundError, match=r"tinyshakespeare/input\.txt does not exist; put the tinyshakespeare"):
        load_text("tinyshakespeare", tmp_path, context=4, download=False)


def test_a_window_larger_than_the_validation_split_is_refused():
    with pytest.raises(ValueError, match=r"data.context = 64 is not shorter than the validation split \(40 tokens\)"):
        TextData.from_text("abcd" * 100, context=64, val_size=0.1)


@pytest.mark.parametrize(("change", "message"), [
    ({"data": {"context": 32}, "model": {"options": {"block_size": 16}}},
     "data.context = 32 is longer than the model's window model.options.block_size = 16"),
    ({"train": {"iterations": 10, "eval_every": 4}}, "train.iterations = 10 must be a multiple of train.eval_every"),
    ({"model": {"name": "fcnn", "options": {}}}, "model.name must be gpt for the text corpus"),
    ({"loss": {"name": "arcface"}}, "loss.name must be gdsoftmax or a loss on logits"),
    ({"loss": {"fused_linear": True, "label_smoothing": 0.1}}, "loss.fused_linear computes the plain gdsoftmax"),
    ({"data": {"augment": True}}, "data.augment is for image data sets"),
    ({"data": {"tokenizer": "bpe", "vocab_size": 200}}, "data.vocab_size must be > 256"),
])
def test_bad_text_configs_name_the_key(corpus, change, message):
    raw = text_config(corpus)
    for section, values in change.items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw)


def test_gpt_on_images_is_refused():
    with pytest.raises(ConfigError, match=r"gpt .* are for text corpora"):
        parse_config({"model": {"name": "gpt"}})


# ---- training and evaluation ----------------------------------------------------------------------


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_text_run_counts_steps_and_resumes_bit_identical(tmp_path, corpus):
    config = parse_config(text_config(corpus))
    assert config.train.epochs == 3  # rounds of eval_every steps
    run_experiment(config, tmp_path / "whole", progress=False)
    with interrupted_at_epoch(2):
        run_experiment(config, tmp_path / "cut", progress=False)
    run_experiment(config, tmp_path / "cut", progress=False)
    rows = _rows(tmp_path / "whole")
    assert rows == _rows(tmp_path / "cut")
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert all(math.isnan(r["test_acc"] or math.nan) for r in rows)
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pt") for r in ("whole", "cut"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    predictions = np.load(tmp_path / "whole" / "predictions.npz")
    assert len(str(predictions["sample_text"])) == 300
    assert set(str(predictions["sample_text"])) <= set(CORPUS)
    n_val = len(CORPUS) - int(len(CORPUS) * 0.9)
    assert len(predictions["val_confidence"]) == (n_val - 1) // 16 * 16
    assert -predictions["val_label_logprob"].mean() == pytest.approx(rows[-1]["val_ce"], rel=1e-5)


def test_a_tokenizer_trained_on_another_corpus_is_refused_on_resume(tmp_path, corpus):
    tokenizer = tmp_path / "tokenizer.json"
    train_bpe(CORPUS, 300).save(str(tokenizer))
    config = parse_config({**text_config(corpus), "data": {"dataset": f"text:{corpus}", "context": 16,
                                                            "tokenizer": str(tokenizer)}})
    with interrupted_at_epoch(2):
        run_experiment(config, tmp_path / "run", progress=False)
    train_bpe("an entirely different corpus of words and more words " * 40, 300).save(str(tokenizer))
    with pytest.raises(RunMismatchError, match="started on other data than it would resume on"):
        run_experiment(config, tmp_path / "run", progress=False)


@torch.no_grad()
def _reference_val_ce(model, tokens: torch.Tensor, context: int) -> float:
    """Mean -log softmax(z)_next over consecutive windows, in float64, written from the definition."""
    n = (len(tokens) - 1) // context
    total = 0.0
    for w in range(n):
        x = tokens[w * context : (w + 1) * context]
        logits = model.double()(x[None])[0]
        for t in range(context):
            total -= float(logits[t, tokens[w * context + t + 1]] - torch.logsumexp(logits[t], 0))
    model.float()
    return total / (n * context)


def test_validation_loss_is_cross_entropy_over_every_validation_token():
    torch.manual_seed(1)
    data = TextData.from_text(CORPUS, context=8, val_size=0.2)
    model = gpt((8,), data.num_classes, n_layer=1, n_head=2, n_embd=16)
    config = parse_config({"data": {"dataset": "tinyshakespeare", "context": 8},
                           "model": {"name": "gpt"}, "train": {"iterations": 1, "eval_every": 1},
                           "loss": {"beta": 5.0}})
    scores, _val, _ = text_scores(model, data, config)
    assert scores["val_ce"] == pytest.approx(_reference_val_ce(model, data.val.tokens, 8), rel=1e-5)
    assert math.isnan(scores["test_ce"])


def test_the_fused_linear_objective_equals_the_logits_path():
    torch.manual_seed(2)
    model = gpt((8,), 30, n_layer=1, n_head=2, n_embd=16)
    x, y = torch.randint(30, (3, 8)), torch.randint(30, (24,))
    losses, grads = [], []
    for fused in (False, True):
        config = parse_config({"data": {"dataset": "tinyshakespeare", "context": 8}, "model": {"name": "gpt"},
                               "train": {"iterations": 1, "eval_every": 1},
                               "loss": {"beta": 0.3, "fused_linear": fused}})
        flat = FlatTokens(model)
        loss, logits = _objective(config, flat, 1)(flat, x, y, 0)
        model.zero_grad()
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
        assert (logits is None) == fused
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


# ---- the study ------------------------------------------------------------------------------------


def test_the_lm_study_reports_every_setting_against_beta_1(tmp_path, corpus):
    from gdsoftmax.engine.sweeps.sweep import run_sweep
    from gdsoftmax.studies.claims import verdicts_from_runs_csv
    from gdsoftmax.studies.language_model import build_lm_study
    from gdsoftmax.studies.run_table import read_runs_csv
    from gdsoftmax.studies.verdicts import read_verdicts

    raw = text_config(corpus, iterations=8)
    raw["sweep"] = {"loss.beta": [1.0, 4.0], "seed": [0, 1, 2]}
    run_sweep(parse_config(raw), tmp_path / "runs", progress=False)
    from gdsoftmax.engine.sweeps.launcher import grid_status

    assert all(c.state == "done" and c.detail.startswith("best validation accuracy")
               for c in grid_status(parse_config(raw), tmp_path / "runs"))
    path = build_lm_study(tmp_path / "runs" / "lm", tmp_path / "report", command="gdsoftmax study lm ...")
    text = path.read_text(encoding="utf-8")
    rows = read_runs_csv(tmp_path / "report" / "runs.csv")
    assert len(rows) == 6
    assert {r.label for r in rows} == {"β = 1", "β = 4"}
    for row in rows:  # the report's val loss is the engine's last evaluation of the whole split
        last = _rows(tmp_path / "runs" / "lm" / row.run)[-1]
        assert row.metrics["val loss"] == pytest.approx(last["val_ce"], rel=1e-6)
        assert row.metrics["val ece"] == pytest.approx(last["val_ece"], rel=1e-6)
    committed = read_verdicts(tmp_path / "report" / "claims.csv")
    assert committed == verdicts_from_runs_csv(tmp_path / "report" / "runs.csv")
    # and recomputed by code that did not write them (scipy's paired t-test, Holm written out in the tests)
    pairs = paired_verdicts(committed)
    recomputed = paired_p_values(tmp_path / "report" / "runs.csv", {v.claim for v in pairs})
    assert pairs
    for v in pairs:
        p, holm_p = recomputed[(v.claim, v.setting)]
        assert v.p == pytest.approx(p, rel=1e-9, nan_ok=True)
        assert v.holm_p == pytest.approx(holm_p, rel=1e-9, nan_ok=True)
    for heading in ("## The whole validation split", "## Temperature scaling", "## Each setting against β = 1",
                    "## Samples", "## Compute"):
        assert heading in text
    assert "| val loss | β = 4 | 3 |" in text
    assert "The anchor" not in text
    assert (tmp_path / "report" / "reliability.png").stat().st_size > 0


def test_a_sweep_summary_of_text_runs_uses_the_validation_accuracy():
    from gdsoftmax.engine.sweeps.sweep import format_summary

    runs = [{"cell": f"beta=1_seed={s}", "setting": "beta=1", "epochs": 8, "train_ce": 1.8, "train_acc": 0.46,
             "best_val_acc": acc, "test_acc": None, "wall_time": 3.0, "of": 2} for s, acc in ((0, 0.43), (1, 0.44))]
    summary = format_summary(runs).splitlines()
    assert "best val % mean ± std" in summary[-2]
    assert summary[-1].split()[:5] == ["beta=1", "2", "43.50", "±", "0.71"]


def test_a_corpus_without_a_newline_trains_and_samples(tmp_path):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text(CORPUS.replace("\n", " "), encoding="utf-8")
    result = run_experiment(parse_config(text_config(corpus)), tmp_path / "run", progress=False)
    assert result["epochs"] == 3
    predictions = np.load(tmp_path / "run" / "predictions.npz")
    assert len(str(predictions["sample_text"])) > 0


def test_a_tokenizer_json_that_cannot_encode_the_corpus_is_one_line(tmp_path, corpus):
    tokenizers = pytest.importorskip("tokenizers")
    words = tokenizers.Tokenizer(tokenizers.models.WordLevel({"the": 0, "moon": 1}))  # no unknown token
    words.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    words.save(str(path))
    with pytest.raises(ValueError, match=r"^data\.tokenizer: .* cannot encode the corpus .*give it an unknown token"):
        load_text(f"text:{corpus}", context=4, tokenizer=str(path))
