"""Literature model sizes: ViT (Dosovitskiy et al.) image towers and CLIP's (Radford et al.)
text towers, by the size word a config's variant names ('tiny' is vlx's CPU size)."""

SIZES = ("tiny", "s32", "b32", "b16", "l14")

VIT = {
    "tiny": dict(patch_size=8, width=128, depth=4, num_heads=4),
    "s32": dict(patch_size=32, width=384, depth=12, num_heads=6),
    "b32": dict(patch_size=32, width=768, depth=12, num_heads=12),
    "b16": dict(patch_size=16, width=768, depth=12, num_heads=12),
    "l14": dict(patch_size=14, width=1024, depth=24, num_heads=16),
}
TEXT = {
    "tiny": dict(width=128, depth=3, num_heads=4),
    "s32": dict(width=384, depth=12, num_heads=6),
    "b32": dict(width=512, depth=12, num_heads=8),
    "b16": dict(width=512, depth=12, num_heads=8),
    "l14": dict(width=768, depth=12, num_heads=12),
}
EMBED_DIM = {"tiny": 128, "s32": 384, "b32": 512, "b16": 512, "l14": 768}
IMAGE_SIZE = {"tiny": 64, "s32": 224, "b32": 224, "b16": 224, "l14": 224}
