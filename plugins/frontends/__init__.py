"""Frontends (kind ``frontends``): waveform batches to feature batches, on the device."""
