"""LLM judges: pointwise and pairwise, local and remote, debiased, cached, cost-accounted."""
