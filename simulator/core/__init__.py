"""The core pipeline: config -> workload -> costs (every op-to-hardware call) -> timeline; bundled resources."""
