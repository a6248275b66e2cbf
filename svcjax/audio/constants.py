"""The one frame rate and the audio file types, for every module that needs them.

So-VITS-SVC 4.1 runs at 44.1 kHz with 512-sample hops (86.13 frames/s): a clip of ``L``
samples has ``L // HOP`` frames of units, F0, volume and mel.
"""

SAMPLING_RATE = 44100
HOP = 512

# Files read as audio when a folder is given (corpus roots, conversion and evaluation inputs).
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".aiff", ".aif")
# Files audio can be written to, with soundfile's format name.
WRITE_FORMATS = {".wav": "WAV", ".flac": "FLAC"}

__all__ = ["SAMPLING_RATE", "HOP", "AUDIO_EXTENSIONS", "WRITE_FORMATS"]
