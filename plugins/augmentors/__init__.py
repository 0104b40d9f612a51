"""Augmentors (kind ``augmentors``): waveform batches in loader workers or on the device (``on``), features on the device."""
