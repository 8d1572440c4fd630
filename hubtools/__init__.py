"""hubtools: a handful of photos in, a DreamBooth-tuned Stable Diffusion model on the Hub out."""

__version__ = "0.1.0"
