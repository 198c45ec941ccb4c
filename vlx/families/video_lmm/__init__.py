"""Video-LMM post-training (Video-R1 / VideoChat-R1 / Time-R1 style): a small video-language
prefix-LM taught to reason by chain-of-thought SFT, then by GRPO from verifiable rewards, and
scored with test-time scaling. Synthetic video questions whose answers a program can check
(`reasoning_videos.py`), the checkers and the rewards built on them (`verifiers.py`)."""
