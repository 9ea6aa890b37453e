"""Spoken narration with eSpeak NG, through the library that ``espeakng-loader`` ships.

The library is driven through ``ctypes`` in synchronous mode: ``espeak_Synth``
returns only when every sample has been handed to our callback. The engine holds
global state that no call resets (its pitch flutter, for one, runs on from one
utterance to the next), so the same text came out differently each time a process
spoke it, and no two fetches of the corpus were alike. Each utterance is therefore
spoken in a fork of a process that has never initialised the engine: the fork's
engine starts from the library's initial state, every time, on any machine.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from functools import cache
from pathlib import Path

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1  # espeakRATE, words per minute

_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class NarrationError(Exception):
    """eSpeak NG could not be loaded, or has no such voice."""


class _Engine:
    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0)
        if self.sample_rate <= 0:
            raise NarrationError("eSpeak NG failed to initialise")
        self.chunks: list[np.ndarray] = []
        # Keep a reference: ctypes does not, and a collected callback crashes the process.
        self.callback = _Callback(self._collect)
        self.lib.espeak_SetSynthCallback(self.callback)

    def _collect(self, wav, n_samples, _events) -> int:
        if n_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def speak(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise NarrationError(f"eSpeak NG has no voice {voice!r}")
        self.lib.espeak_SetParameter(_RATE, int(words_per_minute), 0)
        # Its noise comes from its own generator and from the C library's rand(), whose
        # state a fork inherits from whatever the parent called: both start from 0.
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(0))
        ctypes.CDLL(None).srand(0)
        self.chunks.clear()
        encoded = text.encode("utf-8")
        self.lib.espeak_Synth(
            ctypes.c_char_p(encoded), len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        self.lib.espeak_Synchronize()
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        return (np.concatenate(self.chunks) / 32768.0).astype(np.float32)


@cache
def _engine() -> _Engine:
    return _Engine()


def narrate(
    text: str, language: str, variant: str | None = None, words_per_minute: int = 150
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with eSpeak NG.

    Parameters
    ----------
    text:
        What to say (UTF-8).
    language:
        eSpeak NG voice, e.g. ``"de"``, ``"it"``, ``"la"``.
    variant:
        Optional voice variant (a speaker), e.g. ``"f3"``; see ``espeak-ng-data/voices/!v``.
    words_per_minute:
        Speaking rate.

    Returns
    -------
    tuple
        ``(mono float32 waveform, sample rate in Hz)``.
    """
    voice = f"{language}+{variant}" if variant else language
    fork = multiprocessing.get_context("fork")
    receive, send = fork.Pipe(duplex=False)
    speaker = fork.Process(target=_speak_into, args=(send, text, voice, words_per_minute))
    speaker.start()
    send.close()
    try:
        outcome = receive.recv()
    except EOFError:
        outcome = None
    finally:
        receive.close()
        speaker.join()
    if outcome is None:
        raise NarrationError(f"eSpeak NG ended without an answer (exit status {speaker.exitcode})")
    if isinstance(outcome, NarrationError):
        raise outcome
    return outcome


def _speak_into(send, text: str, voice: str, words_per_minute: int) -> None:
    try:
        engine = _engine()
        send.send((engine.speak(text, voice, words_per_minute), engine.sample_rate))
    except NarrationError as exc:
        send.send(exc)
    finally:
        send.close()
