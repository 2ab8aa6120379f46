"""lm-evaluation-harness on neox models: `neox-eval` and `eval_tasks` during training.

Needs neox-core's `eval` extra (lm-eval); importing this package loads neither it nor torch.
"""
