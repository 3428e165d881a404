"""Speed and memory: the throughput harness behind `mmx bench throughput` and the kernel harness behind
`mmx bench kernels`, with their cost models and device ceilings."""
