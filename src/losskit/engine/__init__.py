"""Shared machinery of the losses, each module with a public interface to the rest of the package.

* :mod:`.rows` — the fused row engine (cross entropy, linear + cross entropy, the distributed shards);
* :mod:`.shards` — one rank's part of the vocab-parallel cross entropy, on the row engine's formulas;
* :mod:`.pointwise` — the chunked engine of the element-wise losses;
* :mod:`.autograd` — accumulation dtypes and the first-order-only backward;
* :mod:`.native` — builds, caches and calls the C++ CPU kernel (``losskit/kernels/cross_entropy.cpp``).

Nothing here imports the public layers (:mod:`losskit.functional`, :mod:`losskit.nn`, :mod:`losskit.keras`).
"""
