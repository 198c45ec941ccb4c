"""CoCa and captioners: a ViT, a unimodal text decoder and a multimodal decoder that
cross-attends to the image; trained by the shared contrastive and captioning losses,
decoded by vlx/decode.py and evaluated by the shared captioning (CIDEr) evaluator."""
