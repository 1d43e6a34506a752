"""What `optkit predict` prints: a line per image with its boxes counted by class, and where the drawn
images went."""

from __future__ import annotations

from collections import Counter

from optkit.report.console import out


def print_predict(result) -> None:
    console = out()
    for image in result.images:
        counts = Counter(d["name"] for d in image["detections"])
        found = ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "no detections"
        console.print(f"{image['image']} ({image['width']}x{image['height']}): {found}", highlight=False)
    total = sum(len(i["detections"]) for i in result.images)
    console.print(
        f"{len(result.images)} image(s), {total} box(es) at {result.imgsz} px in {result.seconds:.1f} s",
        highlight=False,
    )
    if result.save_dir:
        console.print(f"drawn images: {result.save_dir}", highlight=False)
