"""Dual encoders (CLIP, ALIGN, SigLIP): an image tower and a text tower meeting only in a
joint embedding space, trained by the shared contrastive losses (vlx/objectives) and
evaluated by the shared retrieval, zero-shot and linear-probe evaluators (vlx/evals)."""
