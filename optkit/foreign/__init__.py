"""Model files optkit did not write: foreign pickled checkpoints (YOLOv5 / YOLOv6 / Ultralytics, loaded
only with `--trust`), their layout on save, and reading pickles without running them (`scan`).
`optkit.workflows.inputs.open_model` is how commands reach this package."""
