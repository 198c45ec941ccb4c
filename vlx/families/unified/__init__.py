"""Unified modelling (OFA / PaliGemma / Pix2Seq): one prefix-LM that writes every task's
answer as tokens. Image tokens and a task prompt are the prefix (full attention), the answer
the suffix (causal); captioning, VQA, referring-expression grounding and detection are
prompts and target sequences (`tasks.py`), decoded by one KV-cached generator
(`generate.py`, constrained where an output must parse) and scored by parsing evaluators
(`evals.py`)."""
