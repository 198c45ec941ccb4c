"""vlx: vision-language pretraining in JAX/Flax."""

from setuptools import find_packages, setup

# Tested ranges: JAX 0.10.2 / flax 0.12.8 (CPU, Python 3.11) and JAX 0.11.2 / flax 0.12.10
# (GPU image, Python 3.12); upper bounds stop at the next minor release.
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.12",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "tensorflow-datasets>=4.9.9,<4.10",
    "array-record>=0.8.1,<0.9",
    "importlib_resources",
    "sentencepiece>=0.2,<0.3",
    "ml_collections>=1.0,<1.2",
    "chex>=0.1.90,<0.2",
    "numpy>=1.26",
    "pillow",
    "tqdm",
    "tensorboardX>=2.6",
    "pycocoevalcap>=1.2,<1.3",  # COCO caption metrics (BLEU, ROUGE-L, CIDEr, METEOR)
    # Imported checkpoints (vlx.convert, vlx.pretrained): safetensors without torch, and the
    # CLIP tokenizer's Unicode classes (regex) and open_clip's text cleaning (ftfy).
    "safetensors>=0.4",
    "regex>=2023.0",
    "ftfy>=6.1",
]

setup(
    name="vlx",
    version="0.1.0",
    description="Vision-language pretraining in JAX/Flax: one sharded train step for every family",
    packages=find_packages(include=["vlx", "vlx.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3", "nbclient>=0.10", "nbformat>=5.10",
                 "ipykernel>=6.29", "matplotlib>=3.8", "scikit-image>=0.22", "av>=12,<20"],
        # Reading .pt/.bin checkpoints, and the parity tests against the reference models
        # (.ci/run pins torch==2.14.1 torchvision==0.29.1, the pair tested here).
        "torch": ["torch>=2.4", "torchvision>=0.19", "transformers>=5.0,<6",
                  "open_clip_torch>=3.0,<4"],
        # Preparing real TFDS datasets such as coco_captions needs TensorFlow.
        "tf": ["tensorflow>=2.18"],
        "plot": ["matplotlib>=3.8"],
        # Reading video files (vlx/data/video_files.py: MSR-VTT, mp4 / webm) with PyAV.
        "video": ["av>=12,<20"],
    },
)
