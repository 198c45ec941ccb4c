"""The special token ids that vlx's tokenizers, text towers, losses and decoders agree on.

The tokenizer is trained to emit them (vlx/data/tokenizer.py), the text towers never pool
padding, the captioning loss masks it out and decoding pads finished sequences with it; one
definition keeps them from drifting apart.
"""

PAD_ID = 0
UNK_ID = 1
EOS_ID = 2

# The target of a position that no loss reads (unmasked tokens, padding, special regions).
IGNORE = -1
