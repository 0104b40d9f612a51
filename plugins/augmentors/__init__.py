"""Augmentors (kind ``augmentors``): waveform batches in loader workers, feature batches on the device."""
