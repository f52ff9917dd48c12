"""Networks and their training: the bias-free MLP, tiny-cuda-nn's Adam, the losses."""
