"""The core layer: errors, checked file access, image I/O, tiling and artifact schemas.

No torch, no model runtimes: the deployment side and every other layer build on it.
"""
