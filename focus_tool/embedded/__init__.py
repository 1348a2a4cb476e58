"""The embedded demonstration model: a stock LLaVA trained from scratch on the synthetic world."""
