"""Reading and writing audio files: float32 mono in, atomic WAV/FLAC out.

:func:`load_audio` reads anything libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3 with
libsndfile >= 1.1, AIFF, ...) and falls back to ``audioread`` (ffmpeg / GStreamer) for the
rest; channels are averaged as ``librosa.load`` does, and the audio is resampled on the host
when a rate is asked for. Every failure is one :class:`AudioFileError` (a ``ValueError``)
naming the file (a missing file is ``FileNotFoundError``). :class:`StreamedAudio` reads a
long file twice instead of holding it: a first pass block by block, then spans in order.

:func:`save_audio` writes to a temporary name beside the target, syncs it, and renames it
into place: a crash or error never leaves a half-written file, nor destroys the old one.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

import numpy as np

from svcjax.audio import resample as _resample
from svcjax.files import atomic_write, lock, temp_path
from svcjax.audio.constants import WRITE_FORMATS

__all__ = ["AudioFileError", "SILENT_PEAK", "load_audio", "save_audio", "resample_audio",
           "WRITE_FORMATS", "AudioWriter", "StreamedAudio", "temp_path", "remove_stale_temps",
           "MIN_RATE", "MAX_RATE"]

# A clip whose every sample is below -80 dBFS (~3 LSB of 16-bit audio) counts as silent.
SILENT_PEAK = 1e-4

# Sample rates accepted when loading (a 1 Hz "recording" would resample to 44100x its size).
MIN_RATE, MAX_RATE = 1000, 768000
# Samples read (and resampled) at a time by the mono loader.
_BLOCK = 1 << 18
_LIBROSA_RESAMPLERS = ("soxr_vhq", "soxr_hq", "soxr_mq", "soxr_lq", "soxr_qq")


class AudioFileError(ValueError):
    """An audio file that cannot be used: unreadable, corrupt, empty, non-finite or silent."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"audio file {self.path!r} {problem}")


def _read_soundfile(path: str):
    import soundfile as sf

    data, sr = sf.read(path, dtype="float32", always_2d=True)
    return data.T, int(sr)   # (C, L)


def _stream_mono(f, path: str, sr: int | None, resampler) -> tuple[np.ndarray, int, float]:
    """Read an open ``soundfile.SoundFile`` block by block into mono float32 at ``sr``.

    Channels are averaged per block and long files are resampled in overlapping segments
    (see :func:`_resample_blocks`), so the only array the size of the file is the result:
    peak memory is the output plus a few blocks, however the file is stored. Returns
    ``(audio, rate, peak)``; raises :class:`AudioFileError` on non-finite samples.
    """
    file_sr = int(f.samplerate)
    stats = {"peak": 0.0}
    frames = max(int(f.frames), 0)
    if sr is None or int(sr) == file_sr:
        out = _collect(_mono_blocks(f, path, stats), frames)
        return out, file_sr, stats["peak"]
    out = _resample_blocks(_mono_blocks(f, path, stats), file_sr, int(sr), resampler, frames)
    return out, int(sr), stats["peak"]


def _mono_blocks(f, path: str, stats: dict):
    """The channel average of an open ``soundfile.SoundFile``, :data:`_BLOCK` frames at a
    time; ``stats["peak"]`` follows the largest magnitude read."""
    while True:
        data = f.read(_BLOCK, dtype="float32", always_2d=True)
        if data.shape[0] == 0:
            return
        if not np.all(np.isfinite(data)):
            raise AudioFileError(path, "contains NaN or infinite samples")
        stats["peak"] = max(stats["peak"], float(np.max(np.abs(data))))
        mono = data[:, 0] if data.shape[1] == 1 else np.mean(data.T, axis=0)
        yield np.ascontiguousarray(mono, np.float32)


def _collect(blocks, estimate: int) -> np.ndarray:
    """Concatenate 1-D float32 blocks into one array preallocated to ``estimate``."""
    out = np.empty(max(estimate, 0), np.float32)
    n = 0
    for b in blocks:
        if n + len(b) > len(out):
            out = np.concatenate([out[:n], np.empty(max(len(out), n + len(b)), np.float32)])
        out[n:n + len(b)] = b
        n += len(b)
    return out[:n] if n < len(out) else out


def _resample_blocks(blocks, orig_sr: int, target_sr: int, resampler, estimate: int
                     ) -> np.ndarray:
    """:func:`resample_audio` of the concatenated ``blocks``, computed segment by segment.

    The host resampler (``resample_poly``, an FIR filter) gives output ``j`` from the input
    around ``j * down / up``; segments that start at multiples of ``down`` input samples and
    reach past the filter's half-length on each side give the same interior outputs as the
    whole clip, so the input never has to be held whole. librosa's ``soxr_*`` resamplers
    are applied to the whole clip.
    """
    if isinstance(resampler, str) and resampler in _LIBROSA_RESAMPLERS:
        return resample_audio(_collect(blocks, estimate), orig_sr, target_sr, resampler)
    up, down = _resample.rate_ratio(orig_sr, target_sr)
    return _collect(_iter_resampled(blocks, orig_sr, target_sr, resampler),
                    -(-max(estimate, 0) * up // down))


def _iter_resampled(blocks, orig_sr: int, target_sr: int, resampler):
    """The segments of :func:`_resample_blocks` (a ``resample_poly`` preset or filter), in
    order, as they are computed: their concatenation is that function's result."""
    if not (isinstance(resampler, _resample.ResampleFilter)
            or (isinstance(resampler, str) and resampler in _resample.PRESETS)):
        raise ValueError(f"unknown resampler {resampler!r}; expected one of "
                         f"{', '.join(list(_resample.PRESETS) + list(_LIBROSA_RESAMPLERS))} "
                         f"or a ResampleFilter")
    up, down = _resample.rate_ratio(orig_sr, target_sr)
    spec = resampler if isinstance(resampler, _resample.ResampleFilter) \
        else _resample.PRESETS[resampler]
    half = spec.zeros * max(up, down)                     # filter half-length, upsampled grid
    margin = -(-(half // up + 2) // down) * down          # input samples, a multiple of down
    step_out = max(1, _BLOCK // up) * up                  # output samples per segment
    step_in = step_out // up * down
    buf = np.zeros(0, np.float32)                          # input samples [buf_start, ...)
    buf_start = 0
    src = iter(blocks)
    done = False
    j0 = 0
    while True:
        i0 = j0 // up * down
        need = i0 + step_in + margin
        while not done and buf_start + len(buf) < need:
            b = next(src, None)
            if b is None:
                done = True
            else:
                buf = np.concatenate([buf, b])
        total_in = buf_start + len(buf) if done else None
        seg_start = max(0, i0 - margin)
        seg = buf[seg_start - buf_start:need - buf_start]
        if len(seg) == 0 or (total_in is not None and i0 >= total_in):
            break
        y = _resample.resample_host(seg, orig_sr, target_sr, quality=resampler)
        lo = (i0 - seg_start) * up // down
        last = total_in is not None and need >= total_in
        end_j = -(-total_in * up // down) if last else j0 + step_out
        yield y[lo:lo + end_j - j0]
        if last:
            break
        j0 += step_out
        drop = max(0, (j0 // up * down - margin) - buf_start)
        buf, buf_start = buf[drop:], buf_start + drop


def _read_audioread(path: str):
    import audioread

    with audioread.audio_open(path) as f:
        sr, channels = int(f.samplerate), int(f.channels)
        pcm = b"".join(f)
    data = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return data.reshape(-1, channels).T, sr


def resample_audio(audio: np.ndarray, orig_sr: int, target_sr: int,
                   resampler="kaiser_best") -> np.ndarray:
    """Host-side resampling along the last axis.

    ``resampler``: a :mod:`svcjax.audio.resample` preset or ``ResampleFilter`` (the same
    filter the device :func:`~svcjax.audio.resample.resample` applies), or a librosa
    ``soxr_*`` name (``"soxr_hq"`` is current librosa's default; the reference's pinned
    librosa 0.9.1 defaulted to resampy's ``kaiser_best``, which the ``"kaiser_best"`` preset
    reproduces in design).
    """
    if isinstance(resampler, str) and resampler in _LIBROSA_RESAMPLERS:
        import librosa

        if orig_sr == target_sr:
            return np.asarray(audio, np.float32)
        return librosa.resample(np.asarray(audio, np.float32), orig_sr=orig_sr,
                                target_sr=target_sr, res_type=resampler).astype(np.float32)
    if not (isinstance(resampler, _resample.ResampleFilter)
            or (isinstance(resampler, str) and resampler in _resample.PRESETS)):
        raise ValueError(f"unknown resampler {resampler!r}; expected one of "
                         f"{', '.join(list(_resample.PRESETS) + list(_LIBROSA_RESAMPLERS))} "
                         f"or a ResampleFilter")
    return _resample.resample_host(audio, orig_sr, target_sr, quality=resampler)


def load_audio(path, sr: int | None = None, *, mono: bool = True,
               resampler="kaiser_best", allow_silent: bool = False
               ) -> tuple[np.ndarray, int]:
    """Load an audio file as float32 in [-1, 1]: ``(audio, sample_rate)``.

    ``mono=True`` averages the channels (``librosa.to_mono``) into ``(L,)``; ``mono=False``
    gives ``(channels, L)``. With ``sr`` the audio is resampled to it (see
    :func:`resample_audio` for ``resampler``). Raises ``FileNotFoundError`` for a missing
    file and :class:`AudioFileError` for one that is unreadable or corrupt, has no samples,
    has NaN/inf samples, or is silent (peak below :data:`SILENT_PEAK`, -80 dBFS) unless
    ``allow_silent``.
    """
    path = os.fspath(path)
    if sr is not None and (isinstance(sr, bool) or int(sr) != sr or int(sr) <= 0):
        raise ValueError(f"sr must be a positive integer sample rate or None, got {sr!r}")
    _check_path(path)
    if mono:
        return _load_mono(path, sr, resampler, allow_silent)
    try:
        data, file_sr = _read_soundfile(path)
    except Exception as sf_err:  # libsndfile cannot read it: try ffmpeg/GStreamer
        data, file_sr = _read_fallback(path, sf_err)
    _check_rate(path, file_sr)
    if data.shape[-1] == 0 or data.shape[0] == 0:
        raise AudioFileError(path, "contains no samples")
    if not np.all(np.isfinite(data)):
        raise AudioFileError(path, "contains NaN or infinite samples")
    if not allow_silent and float(np.max(np.abs(data))) < SILENT_PEAK:
        raise AudioFileError(path, f"is silent (peak {float(np.max(np.abs(data))):.2g} is "
                                   f"below -80 dBFS)")
    data = np.ascontiguousarray(data, np.float32)
    if sr is not None and int(sr) != file_sr:
        data = resample_audio(data, file_sr, int(sr), resampler)
        file_sr = int(sr)
    return data, file_sr


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"audio file not found: {path!r}")
    if os.path.isdir(path):
        raise AudioFileError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(os.stat(path).st_mode):
        # a FIFO would block the read forever; a device or socket is no recording either
        raise AudioFileError(path, "is not a regular file (a FIFO, device or socket)")


def _read_fallback(path: str, sf_err: Exception) -> tuple[np.ndarray, int]:
    """``(channels, samples), rate`` through audioread (ffmpeg/GStreamer) for a file
    libsndfile could not open; an :class:`AudioFileError` with libsndfile's reason if that
    fails too."""
    try:
        return _read_audioread(path)
    except Exception:
        reason = str(sf_err).strip().splitlines()[-1] if str(sf_err).strip() else "?"
        raise AudioFileError(path, f"cannot be read as audio (corrupt or unsupported "
                                   f"format): {reason}") from None


def _check_rate(path: str, rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioFileError(path, f"has a sample rate of {rate} Hz; only {MIN_RATE} to "
                                   f"{MAX_RATE} Hz is accepted")


def _load_mono(path: str, sr, resampler, allow_silent: bool) -> tuple[np.ndarray, int]:
    """:func:`load_audio` with ``mono=True``: read block by block (see :func:`_stream_mono`)."""
    import soundfile as sf

    try:
        f = sf.SoundFile(path)
    except Exception as sf_err:  # libsndfile cannot read it: try ffmpeg/GStreamer
        data, file_sr = _read_fallback(path, sf_err)
        _check_rate(path, file_sr)
        if data.size == 0:
            raise AudioFileError(path, "contains no samples")
        mono = data[0] if data.shape[0] == 1 else np.mean(data, axis=0)
        blocks = (mono[i:i + _BLOCK] for i in range(0, len(mono), _BLOCK))
        f = _ArrayFile(blocks, file_sr, len(mono), float(np.max(np.abs(data))))
    with f:
        _check_rate(path, int(f.samplerate))
        if isinstance(f, _ArrayFile):
            audio, rate = f.audio(sr, resampler)
            peak = f.peak
        else:
            try:
                audio, rate, peak = _stream_mono(f, path, sr, resampler)
            except (AudioFileError, ValueError):
                raise
            except Exception as e:   # libsndfile read error part way (truncated data)
                raise AudioFileError(path, f"cannot be read as audio (corrupt or truncated): "
                                           f"{str(e).strip() or type(e).__name__}") from None
    if len(audio) == 0:
        raise AudioFileError(path, "contains no samples")
    if not allow_silent and peak < SILENT_PEAK:
        raise AudioFileError(path, f"is silent (peak {peak:.2g} is below -80 dBFS)")
    return audio, rate


class _ArrayFile(contextlib.nullcontext):
    """Decoded audio (from audioread) presented like the streaming reader's source."""

    def __init__(self, blocks, samplerate, frames, peak):
        super().__init__()
        self.blocks, self.samplerate, self.frames, self.peak = blocks, samplerate, frames, peak

    def audio(self, sr, resampler):
        if sr is None or int(sr) == self.samplerate:
            return _collect(self.blocks, self.frames), self.samplerate
        return _resample_blocks(self.blocks, self.samplerate, int(sr), resampler,
                                self.frames), int(sr)


class StreamedAudio:
    """A file read twice instead of held whole: a first pass measures it, a second one reads
    it back in order, a span at a time.

    :meth:`scan` reads the file block by block, mono and resampled to ``sr`` exactly as
    :func:`load_audio` does, hands each block to ``consume`` (e.g. a running RMS) and keeps
    only the length and peak. :meth:`reader` then decodes and resamples the file again from
    the start, the same way, so its samples are bit for bit those :func:`load_audio` gives;
    :meth:`Reader.read` returns spans whose starts never decrease, keeping only the samples
    from the last start on. Only libsndfile formats with a ``resample_poly`` resampler are
    read this way; for others (audioread, ``soxr_*``) :meth:`scan` returns ``None`` and the
    file is to be loaded whole. A file changed between the passes is an
    :class:`AudioFileError` in the second one.
    """

    def __init__(self, path: str, sr: int, file_sr: int, resampler, length: int,
                 peak: float, stamp):
        self.path, self.sr, self.file_sr, self.resampler = path, sr, file_sr, resampler
        self.length, self.peak, self._stamp = length, peak, stamp

    @staticmethod
    def _stamp_of(path: str):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns, st.st_ino

    @classmethod
    def scan(cls, path, sr: int, consume, *, resampler="kaiser_best",
             allow_silent: bool = False) -> "StreamedAudio | None":
        """First pass (see the class); raises as :func:`load_audio` would."""
        import soundfile as sf

        path = os.fspath(path)
        sr = int(sr)
        _check_path(path)
        if isinstance(resampler, str) and resampler in _LIBROSA_RESAMPLERS:
            return None
        stamp = cls._stamp_of(path)
        try:
            f = sf.SoundFile(path)
        except Exception:   # noqa: BLE001 (not libsndfile's: load_audio tries audioread)
            return None
        with f:
            file_sr = int(f.samplerate)
            _check_rate(path, file_sr)
            self = cls(path, sr, file_sr, resampler, 0, 0.0, stamp)
            stats = {"peak": 0.0}
            n = 0
            try:
                for block in self._blocks(f, stats):
                    consume(block)
                    n += len(block)
            except (AudioFileError, ValueError):
                raise
            except Exception as e:   # libsndfile read error part way (truncated data)
                raise AudioFileError(path, f"cannot be read as audio (corrupt or truncated): "
                                           f"{str(e).strip() or type(e).__name__}") from None
        if n == 0:
            raise AudioFileError(path, "contains no samples")
        if not allow_silent and stats["peak"] < SILENT_PEAK:
            raise AudioFileError(path, f"is silent (peak {stats['peak']:.2g} is below "
                                       f"-80 dBFS)")
        self.length, self.peak = n, stats["peak"]
        return self

    def _blocks(self, f, stats):
        blocks = _mono_blocks(f, self.path, stats)
        if self.sr == self.file_sr:
            return blocks
        return _iter_resampled(blocks, self.file_sr, self.sr, self.resampler)

    def _second_pass(self):
        import soundfile as sf

        if self._stamp_of(self.path) != self._stamp:
            raise AudioFileError(self.path, "changed while it was being converted")
        with sf.SoundFile(self.path) as f:
            yield from self._blocks(f, {"peak": 0.0})

    def reader(self) -> "StreamedAudio.Reader":
        """The second pass."""
        return StreamedAudio.Reader(self)

    class Reader:
        """Spans of the second pass, in order (starts never decrease)."""

        def __init__(self, audio: "StreamedAudio"):
            self._audio = audio
            self._src = audio._second_pass()
            self._buf = np.zeros(0, np.float32)      # samples [self._start, ...)
            self._start = 0

        def read(self, start: int, stop: int) -> np.ndarray:
            """Samples ``[start, stop)`` (a copy)."""
            path = self._audio.path
            if start < self._start or stop > self._audio.length or stop < start:
                raise ValueError(f"cannot read [{start}, {stop}) of {path!r} after "
                                 f"[{self._start}, ...) (reads go forward)")
            try:
                while self._start + len(self._buf) < stop:
                    block = next(self._src, None)
                    if block is None:
                        raise AudioFileError(path, "changed while it was being converted "
                                                   "(it is shorter now)")
                    self._buf = np.concatenate([self._buf[start - self._start:], block])
                    self._start = start
            except AudioFileError:
                self.close()
                raise
            except Exception as e:   # noqa: BLE001 (libsndfile read error: file changed)
                self.close()
                raise AudioFileError(path, f"could not be read again (changed while it was "
                                           f"being converted?): "
                                           f"{str(e).strip() or type(e).__name__}") from None
            out = self._buf[start - self._start:stop - self._start].copy()
            self._buf, self._start = self._buf[start - self._start:], start
            return out

        def close(self) -> None:
            self._src.close()


# ----------------------------------------------------------------------------- writing

_TEMP_RE = r"\.{name}\.[0-9a-f]{{8,32}}\.tmp"


def remove_stale_temps(path) -> list[str]:
    """Remove temporary files (``.NAME.<hex>.tmp``) that an interrupted write of ``path``
    left behind; returns their paths. A file that some running process is still writing
    (it holds the lock :func:`save_audio` and :class:`AudioWriter` take) is left alone."""
    import fcntl

    path = Path(os.fspath(path))
    folder = path.parent
    if not folder.is_dir():
        return []
    pattern = re.compile(_TEMP_RE.format(name=re.escape(path.name)))
    removed = []
    for entry in os.scandir(folder):
        if not pattern.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue            # a live writer holds it
            os.unlink(entry.path)
            removed.append(entry.path)
        finally:
            os.close(fd)
    return removed


class _GuardedFile:
    """An unbuffered file for libsndfile's virtual I/O whose write errors (disk full, file
    too large, I/O error) are kept and re-raised by :class:`AudioWriter` as the
    ``OSError`` they are (an exception inside the C callback would only be printed)."""

    def __init__(self, raw):
        self.raw = raw
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data)
        done = 0
        while done < len(view):
            try:
                n = self.raw.write(view[done:])
            except OSError as e:
                self.error = self.error or e
                return done
            if not n:
                return done
            done += n
        return done

    def seek(self, offset, whence=0):
        return self.raw.seek(offset, whence)

    def tell(self):
        return self.raw.tell()

    def read(self, n=-1):
        try:
            return self.raw.read(n)
        except OSError as e:
            self.error = self.error or e
            return b""

    def readinto(self, buf):
        try:
            return self.raw.readinto(buf)
        except OSError as e:
            self.error = self.error or e
            return 0


class AudioWriter:
    """Write one audio file block by block, atomically.

    ``with AudioWriter(path, sr) as w: w.write(block); ...``: the blocks go to a hidden,
    locked temporary file beside ``path``; when the block ends without an error the file is
    flushed, synced and renamed over ``path``; on any error (or :meth:`abort`) it is removed
    and an existing ``path`` is left untouched. Blocks are ``(n,)`` float (clipped to
    [-1, 1] for integer subtypes); NaN/inf raise ``ValueError``.
    """

    def __init__(self, path, sr: int, *, subtype: str = "PCM_16", make_dirs: bool = True):
        import soundfile as sf

        self.path = Path(os.fspath(path))
        fmt = WRITE_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot write {str(self.path)!r}: the extension must be one of "
                             f"{', '.join(WRITE_FORMATS)}")
        if not sf.check_format(fmt, subtype):
            raise ValueError(f"cannot write {str(self.path)!r}: subtype {subtype!r} is not "
                             f"valid for {fmt}")
        self.sr, self.fmt, self.subtype = int(sr), fmt, subtype
        self._clip = subtype.upper().startswith("PCM")
        self.make_dirs = make_dirs
        self.tmp: Path | None = None
        self._raw = self._sf = self._guard = None
        self.frames = 0

    def open(self) -> "AudioWriter":
        import soundfile as sf

        if self.make_dirs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        self._raw = open(self.tmp, "xb+", buffering=0)
        self._guard = _GuardedFile(self._raw)
        try:
            lock(self._raw.fileno())
            self._sf = self._io(lambda: sf.SoundFile(
                self._guard, "w", samplerate=self.sr, channels=1, format=self.fmt,
                subtype=self.subtype))
        except BaseException:
            self.abort()
            raise
        return self

    def _io(self, call):
        """Run a libsndfile call; a write error the guard kept is raised as itself."""
        try:
            result = call()
        except Exception:
            if self._guard.error is not None:
                raise self._guard.error from None
            raise
        if self._guard.error is not None:
            raise self._guard.error
        return result

    def write(self, block) -> None:
        data = np.asarray(block, np.float32).reshape(-1)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"audio for {str(self.path)!r} contains NaN or infinite samples")
        if self._clip:
            data = np.clip(data, -1.0, 1.0)
        self._io(lambda: self._sf.write(data))
        self.frames += len(data)

    def commit(self) -> Path:
        """Finish the file and move it into place."""
        if self.frames == 0:
            raise ValueError(f"audio for {str(self.path)!r} has no samples")
        try:
            self._io(self._sf.close)
            self._sf = None
            os.fsync(self._raw.fileno())
            os.replace(self.tmp, self.path)
            self.tmp = None
        except BaseException:
            self.abort()
            raise
        finally:
            if self._raw is not None:
                self._raw.close()
                self._raw = None
        return self.path

    def abort(self) -> None:
        """Drop what was written (the target is left as it was)."""
        for closer in (self._sf, self._raw):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer.close()
        self._sf = self._raw = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                self.tmp.unlink()
            self.tmp = None

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


def save_audio(path, audio, sr: int, *, subtype: str = "PCM_16",
               make_dirs: bool = True) -> Path:
    """Write ``audio`` to ``path`` (``.wav`` or ``.flac``) atomically; returns the path.

    ``audio``: ``(L,)`` mono or ``(L, channels)``; float in [-1, 1] (clipped there for
    integer subtypes) or int16 written as is. ``subtype`` is a libsndfile subtype
    (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, ...). The data goes to a hidden temporary file
    in the same directory, is flushed to disk, and replaces ``path`` by an atomic rename; on
    any error the temporary file is removed and an existing ``path`` is left untouched.
    """
    import soundfile as sf

    path = Path(os.fspath(path))
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write {str(path)!r}: the extension must be one of "
                         f"{', '.join(WRITE_FORMATS)}")
    if isinstance(sr, bool) or int(sr) != sr or int(sr) <= 0:
        raise ValueError(f"sr must be a positive integer sample rate, got {sr!r}")
    data = np.asarray(audio)
    if data.ndim not in (1, 2) or data.shape[0] == 0:
        raise ValueError(f"audio for {str(path)!r} must be (L,) or (L, channels) with L > 0, "
                         f"got shape {data.shape}")
    if data.dtype != np.int16:
        data = data.astype(np.float32)
        if not np.all(np.isfinite(data)):
            raise ValueError(f"audio for {str(path)!r} contains NaN or infinite samples")
        if subtype.upper().startswith("PCM"):
            data = np.clip(data, -1.0, 1.0)
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"cannot write {str(path)!r}: subtype {subtype!r} is not valid for "
                         f"{fmt}")
    if make_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        sf.write(f, data, int(sr), format=fmt, subtype=subtype)
    return path
