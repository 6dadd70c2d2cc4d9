"""`compare bench`, above the run:
- measure: the same training work timed per mode (shared pass, hand loop, fused)
- peak: the machine's peak, what a throughput is measured against"""
