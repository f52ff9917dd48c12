"""Signed distance fields from triangle meshes (instant-ngp's SDF primitive): instant-ngp's
sample mix with libigl ground truth, training, marching-cubes extraction."""
