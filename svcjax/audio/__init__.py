"""The audio front-end: everything between a sound file and the models' per-frame inputs.

One frame rate throughout: 44.1 kHz audio, hop 512 (86.13 frames/s), ``L // 512`` frames.

=========================  ==================================================================
module                     what
=========================  ==================================================================
``audio.io``               load any format as float32 mono at a rate; atomic WAV/FLAC writes
``audio.resample``         polyphase Kaiser-sinc resampling in JAX (and the same on the host)
``audio.spectrogram``      linear spectrogram, 80-bin training mel, 128-bin vocoder mel
``audio.features``         volume, frame alignment of units, loudness-envelope mix
``audio.pitch``            F0 encodings (coarse bins, log-F0)
``audio.f0``               F0 extraction: CREPE, RMVPE (JAX), dio/harvest/pm (CPU); transposition
``audio.slicer``           cutting at silences; padding, crossfading converted pieces
``audio.prepare``          the training-corpus chain (trim, normalise, resample)
=========================  ==================================================================

Device functions take ``(..., L)`` audio and return channels-last ``(..., T, C)`` features
(``(..., T)`` for per-frame scalars); they are jit-compiled and batched.
"""
