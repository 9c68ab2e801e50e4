"""One file per torch loss (or per pair that shares its math), named after torch's functional name.

Each file holds the loss's math (formulas, autograd Function or engine spec, plain-PyTorch reference), the
public function, the Module, and ``CATALOG``, the loss's entries in :mod:`losskit._catalog`. The public
namespaces :mod:`losskit.functional` and :mod:`losskit.nn` re-export them. To add a loss: a file here, its
test file, one re-export line in ``functional`` and one in ``nn``, and a README row.
"""
