"""The "Help" tab: how anomalens decides (score, threshold, normalised score) and the dataset layouts."""

from __future__ import annotations

from anomalens.ui.common import ModelLists, UISettings
from anomalens.ui.jobs import JobBoard

HELP_MARKDOWN = """
### How anomalens decides
- **Training data defines normal.** A model learns only from images (or videos) of good parts. Anything that
  looks different from them is flagged, whether it is a defect or just something the training set never showed
  (new lighting, another product variant). Train on strictly defect-free examples that cover the normal variation.
- **The score** says how unlike the training data an image is (the strongest region of its anomaly map, so a small
  defect is not averaged away). Raw scores are on each model's own scale.
- **The threshold** is chosen when training ends, on normal images held out from training, so that about the target
  share of normal parts (1% by default) would be flagged. Test images never influence it.
- **Normalised score**: the raw score mapped to 0..1 with **0.5 exactly at the threshold**. Above 0.5 = ANOMALOUS.
  So is an image or frame the model could not score (shown as —): it never passes as normal.
  Heatmaps use the same scale for every image, so a normal part stays cold.
- **The threshold slider** in *Inspect images* relabels the results at once (no rescoring): move it up for fewer
  false alarms, down to miss fewer defects. The CSV you download uses the threshold set at that moment.
- **Video**: every frame gets a score; runs of frames above the threshold become the intervals in the table.

### Dataset layouts
- Images (MVTec AD): `<category>/train/good/*.png`, `test/good/*`, `test/<defect_type>/*`,
  optional `ground_truth/<defect_type>/<name>_mask.png`.
- Video: `<category>/train/normal/*.mp4`, `test/normal/*`, `test/<anomaly_type>/*`, or frame folders
  `<category>/training/frames/<clip>/` and `testing/frames/<clip>/` (UCSD Ped2).
- For *Train*, give a folder under the server's allowed data folders, or upload a zip with the same layout.
"""


def build(settings: UISettings, board: JobBoard, lists: ModelLists) -> None:
    """The tab's layout (inside a ``gr.Blocks``)."""
    import gradio as gr

    with gr.Tab("Help", id="help"):
        gr.Markdown(HELP_MARKDOWN)
