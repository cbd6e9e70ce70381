"""Instruction editing in the triplane latent (Instructive3D-style): a rectified flow over
latent deltas, conditioned on the source latent and the instruction's sentence features."""
