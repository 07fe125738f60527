"""The in-process model runtime: one Hugging Face causal LM, its tokenizer, and
the KV caches it produces and consumes (activation memory).

The only package that imports ``transformers`` (and, later, ``peft``). Importing
``memosd.runtime`` itself is cheap: torch and transformers load when
``memosd.runtime.engine`` is imported, which the daemon does only when a model
is configured.

Modules:
- ``locate``: where the weights come from (a model folder or a GGUF file,
  converted once to a cached safetensors copy); the default SmolLM2 package.
- ``fingerprint``: what an activation was built for (model, weights, dtype,
  tokenizer, template, adapter) and how two fingerprints differ.
- ``template``: the documented context-block template and prompt composition.
- ``kvcache``: KV tensors to and from transformers caches and packed pages.
- ``generation``: options, incremental detokenisation and stop strings.
- ``engine``: ``ModelRuntime``: prefill, injection and streaming generation.
"""
