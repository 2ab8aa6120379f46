"""Text generation from neox checkpoints: KV-cached batched decoding, sampling, `neox-generate`.

Importing this package loads no torch; the modules do.
"""
