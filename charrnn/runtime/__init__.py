"""Where and how charrnn computes: the device, precision, distributed ranks, atomic files,
progress bars, and the one module that touches PyTorch internals (``kernels``). Imports no other
layer of charrnn."""
