"""Run store, aggregation and reports. Imports neither mmx.model nor mmx.kernels."""
