"""Adapters for published 3D checkpoints (Shap-E through diffusers; TripoSR-format image-to-3D
in `models.triposr`). Each turns its model's output into a Kiln mesh: Kiln's axes (+Z up, front
-Y), normalised into the cube like any external mesh, sRGB vertex colours."""
