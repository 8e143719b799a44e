"""Quantization of a trained network: simulated b-bit rounding of weights and activations (``fake``), a
quantization-aware fine-tune (``qat``), real int8 on the CPU through torchao (``int8``), the studies that the
command line and the app run, with their registry ``MODES`` (``studies``), and the typed reports they return
(``reports``)."""
