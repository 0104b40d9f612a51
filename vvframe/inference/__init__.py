"""Using a trained model: ``card`` (the run's model card, and what a loaded file may name), ``model`` (the model
type), ``api`` (``vvframe.load``), ``exported`` (reading exported files), ``export`` (writing them), ``serve``
(the HTTP service). The commands that use them are in :mod:`vvframe.cli`."""
