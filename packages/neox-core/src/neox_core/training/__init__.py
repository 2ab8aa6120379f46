"""The training loop and what it is made of.

`run.main_train(cfg)` is the entry `neox-train` calls; `loop.train` is the loop itself;
`step` holds one optimizer step and evaluation; `schedules`, `optimizer`, `precision`,
`batch`, `log_line`, `throughput`, `trackers`, `signals`, `launch` and `state` one concern
each. Importing this package does not import torch; its modules do.
"""
