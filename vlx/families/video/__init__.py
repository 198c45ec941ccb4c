"""Video-text: a video tower (ViViT, TimeSformer, or FrameMean, the time-blind control) and
the text tower trained by the shared contrastive losses (model.py), scored by text<->video
retrieval and by pairwise accuracy on temporal twins, either with frames shuffled (evals.py).
Nothing is imported here: vlx/components.py lists the modules."""
