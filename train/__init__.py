"""TSPO reinforcement learning of the temporal agent (`tspo-edge train`; docs/train.md).

data (rows) -> features (index) -> samples (dual-style) -> rollout (Gumbel top-k + MLLM)
-> rl (rewards, advantages, loss) -> loop (Trainer: steps, checkpoints, logs).
"""
