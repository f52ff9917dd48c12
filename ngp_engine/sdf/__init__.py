"""Signed distance fields from triangle meshes (instant-ngp's SDF primitive): ground truth
with libigl, instant-ngp's sample mix, training, marching-cubes extraction and metrics."""
