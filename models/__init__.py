"""Kiln's models: plain PyTorch and NumPy, no Blender and no I/O protocol.

Conventions (shared by every model and the add-on): an asset lives in the cube
[-1, 1]^3, +Z up, its front facing -Y (Blender's Front view looks from -Y toward +Y).
"""
