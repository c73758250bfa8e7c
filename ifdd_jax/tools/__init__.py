"""Command-line tools: model summary (more in later issues)."""
