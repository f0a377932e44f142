"""MNIST without torch: the IDX files (``idx``: parse, check, locate, download), the exact 28->32 resize of
training (``resize``), real-world images normalised like MNIST digits (``digits``), and the background read of
the dataset while torch imports (``prefetch``)."""
