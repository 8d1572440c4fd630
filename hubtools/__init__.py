"""hubtools: a handful of photos in, a DreamBooth-tuned SD, SDXL or FLUX.1 model on the Hub out."""

__version__ = "0.1.0"
