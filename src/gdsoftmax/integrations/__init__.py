"""The β-loss where other libraries expect a loss (optional extras).

* :mod:`gdsoftmax.integrations.hf`: causal language models of Hugging Face transformers: the
  β-loss in the form their ``loss_function`` and ``Trainer(compute_loss_func=...)`` take, and a
  fused path on the hidden states and the LM head that never materialises the logits.
* :mod:`gdsoftmax.integrations.lightning`: a Lightning Callback that sets a GradientDecayLoss's β from
  a schedule each step, or from the adaptive controller each validation epoch.
"""
