"""Neural radiance fields from posed images (instant-ngp's NeRF primitive): the model (field,
occupancy grid, scene transform), training, test-split evaluation, the hidden-space test
and mesh extraction."""
