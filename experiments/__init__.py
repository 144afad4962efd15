"""Experiments: run the loop under several arms × seeds on one task and measure what each buys."""
