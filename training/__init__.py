"""Candidate generation, SFT, DPO, the round orchestrator, evaluation and wandb logging."""
