"""The image policy both services apply to uploads: the bounded structural pre-scan."""
