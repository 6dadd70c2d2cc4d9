"""`compare bench`: the same training work timed per mode (measure) against a peak (peak)."""
