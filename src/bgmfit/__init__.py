"""bgmfit: learn which background music fits a piece of audio, and which music is like which."""

__version__ = "0.1.0"
