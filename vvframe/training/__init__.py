"""Launching (single device, DataParallel, DDP, torchrun) and checkpoints."""
