"""Fusion encoders (UNITER, OSCAR, ViLBERT, LXMERT, ALBEF): one model around five stacks,
the training task that masks and samples hard negatives, and the momentum teacher."""
