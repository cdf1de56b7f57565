"""The β-loss for Hugging Face causal LMs, on a tiny randomly initialised Llama built from a config
(no download): at beta = 1 it equals transformers' own loss, with and without num_items_in_batch;
the fused path equals the unfused one; a Trainer trains with it."""

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from gdsoftmax.integrations.hf import (  # noqa: E402
    BetaLossForTrainer,
    causal_lm_fused_loss,
    causal_lm_loss,
    fused_lm_loss,
    shift_labels,
)


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


def _batch(seed=1):
    torch.manual_seed(seed)
    input_ids = torch.randint(101, (3, 12))
    labels = input_ids.clone()
    labels[0, :4] = -100  # a masked prompt
    labels[2, 9:] = -100  # padding
    return input_ids, labels


def test_shift_labels():
    labels = torch.tensor([[1, 2, 3], [4, -100, 6]])
    assert shift_labels(labels).tolist() == [2, 3, -100, -100, 6, -100]


def test_at_beta_1_the_loss_is_transformers_own(tiny_llama):
    input_ids, labels = _batch()
    with torch.no_grad():
        outputs = tiny_llama(input_ids=input_ids, labels=labels)
    torch.testing.assert_close(causal_lm_loss(outputs.logits, labels), outputs.loss)
    items = int((shift_labels(labels) != -100).sum()) + 7  # as if the accumulated batch held more tokens
    theirs = tiny_llama.loss_function(outputs.logits, labels, vocab_size=101, num_items_in_batch=items)
    torch.testing.assert_close(causal_lm_loss(outputs.logits, labels, num_items_in_batch=items), theirs)
    smaller = causal_lm_loss(outputs.logits, labels, beta=0.5)
    assert smaller < outputs.loss  # J = log(expm1(CE) + beta) per token: below CE for beta < 1


def test_the_fused_path_equals_the_unfused_one(tiny_llama):
    input_ids, labels = _batch()
    for beta, smoothing, items in ((1.0, 0.0, None), (0.3, 0.0, 40), (0.3, 0.1, None)):
        tiny_llama.zero_grad()
        unfused = causal_lm_loss(tiny_llama(input_ids=input_ids).logits, labels, beta=beta,
                                 label_smoothing=smoothing, num_items_in_batch=items)
        unfused.backward()
        expected = {n: p.grad.clone() for n, p in tiny_llama.named_parameters() if p.grad is not None}
        tiny_llama.zero_grad()
        fused = fused_lm_loss(tiny_llama, input_ids, labels, beta=beta, label_smoothing=smoothing,
                              num_items_in_batch=items, chunk_rows=8)
        fused.backward()
        torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-6)
        for name, grad in expected.items():
            torch.testing.assert_close(dict(tiny_llama.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)


def test_a_trainer_trains_with_the_beta_loss(tiny_llama, tmp_path):
    pytest.importorskip("accelerate")
    input_ids, labels = _batch()
    rows = [{"input_ids": i, "labels": lab} for i, lab in zip(input_ids, labels, strict=True)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=3, max_steps=3,
                                          learning_rate=1e-2, report_to=[], use_cpu=True, save_strategy="no",
                                          logging_steps=1, gradient_accumulation_steps=1)
    trainer = transformers.Trainer(model=tiny_llama.train(), args=args, train_dataset=rows,
                                   compute_loss_func=BetaLossForTrainer(beta=0.5))
    result = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3
    assert losses[-1] < losses[0]
    assert result.global_step == 3


def test_errors_say_what_to_do():
    hidden, weight, labels = torch.randn(1, 4, 8), torch.randn(11, 8), torch.randint(11, (1, 4))
    os.environ["TRITON_INTERPRET"], previous = "0", os.environ.get("TRITON_INTERPRET")
    try:
        if not torch.cuda.is_available():
            with pytest.raises(ValueError, match="label smoothing on the fused path needs the Triton kernel"):
                causal_lm_fused_loss(hidden, weight, labels, beta=0.5, label_smoothing=0.1)
    finally:
        os.environ["TRITON_INTERPRET"] = previous or "1"
