"""Feature dimensions, their fusion (method A), and the MFCC-frame feature (method B).

One STFT per track (:mod:`bgmfit.features.spectrum`) feeds every dimension:

========  ==========================================================  =======
name      what it measures                                             columns
========  ==========================================================  =======
timbre    MFCC mean and spread, and the spread of their deltas         3 x n_mfcc
spectral  centroid, bandwidth, roll-off, flatness; octave contrast     15
tonality  chroma profile, key strength and mode (major - minor)        14
rhythm    onset strength, its spread, pulse clarity; track tempo       4
energy    RMS level, its spread and peak; dynamic range in dB          4
prosody   voiced ratio, f0 level, spread and range (cepstral pitch)    4
========  ==========================================================  =======

Each row of the fused matrix is one segment of ``segment_seconds``.
"""
