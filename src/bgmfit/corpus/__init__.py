"""The built-in demo corpus: real scores from music21's corpus, rendered to audio offline."""
