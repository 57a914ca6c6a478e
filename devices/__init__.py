"""The hardware side: Jetson catalog, workload cost model, timing and memory models, network and
dynamics processes. Pure numpy; never imports torch or simpy."""
