"""Lesson 08 (language models): finding and loading a causal LM, GGUF included (``causallm``), students with
copied or random decoder layers (``decoders``), per-token divergences: forward / reverse KL, JSD(beta), top-k
(``divergences``), review and WikiText windows (``lmtext``), seeded continuations (``generation``), the training of
each method (``lmdistil``), held-out scores (``lmeval``), the experiment and the softmax's costs (``lmcompare``),
the mode-covering toy (``modes``). Depends on ``common`` only."""
