"""Unit tests of the benchmarks themselves (they import bench; the suite under tests/ never does)."""
