"""The pictures people look at in a run folder (docs/architecture.md, Layers: library, layer 3).

- `optkit.pictures.curves` (matplotlib, imported inside its functions): `results.png`, the loss and metric
  curves of a results.csv (optkit/train/results.py), and `PR_curve.png`, precision against recall per class.
- `optkit.pictures.boxes` (Pillow and numpy): boxes with class and score drawn on an image
  (`draw_detections`, what `predict --save` writes), the mosaic of a batch with its boxes (`batch_grid`,
  `val_batch0_labels.jpg` / `val_batch0_pred.jpg`) and the conversions from the loaders' target rows and
  the NMS output to boxes per image.

This package imports neither module: import the one you draw with, so that light code that only names the
package pulls in neither Pillow nor matplotlib. Every file is written atomically (optkit.io): a failed write
leaves the previous picture, or nothing, and raises `optkit.io.WriteError` in one line.
"""
