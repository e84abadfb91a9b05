"""How both services write their logs: one JSON object per line, every line through the
credentials scrubber. Shared because a secret-free log is a security property, and two copies
had already drifted."""
