"""Helpers for the `edge-asr serve` tests: a server in a background thread, and Wyoming client steps."""

from __future__ import annotations

import asyncio
import io
import threading
import wave
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event

from edge_asr import EdgeTranscriber
from edge_asr.serve.command import serve
from edge_asr.serve.engine import Engine, ServeLimits


class ServerThread:
    """`edge-asr serve` (Wyoming and HTTP on 127.0.0.1, ports chosen by the system) in a thread with its
    own event loop, so that tests can use synchronous clients (openai) as well as asyncio ones."""

    def __init__(
        self,
        transcriber: EdgeTranscriber,
        limits: Optional[ServeLimits] = None,
        streaming_first: bool = False,
        engine: Optional[Engine] = None,
    ):
        self.engine = engine or Engine(transcriber, limits)
        self.streaming_first = streaming_first
        self.addresses: Dict[str, str] = {}
        self.error: Optional[BaseException] = None
        self._ready = threading.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._thread = threading.Thread(target=self._run, name="serve-test", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__/__exit__
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def ready(addresses: Dict[str, str]) -> None:
            self.addresses = addresses
            self._ready.set()

        await serve(
            self.engine,
            "tcp://127.0.0.1:0",
            ("127.0.0.1", 0),
            self.streaming_first,
            ready=ready,
            stop=self._stop,
        )

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None or not self.addresses:
            raise RuntimeError(f"the server did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the server did not stop"

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if self.error is not None:
            raise self.error

    @property
    def wyoming_port(self) -> int:
        return int(self.addresses["wyoming"].rsplit(":", 1)[1])

    @property
    def http_url(self) -> str:
        return self.addresses["http"]


def int16_pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(int16_pcm(samples))
    return buffer.getvalue()


def audio_events(
    pcm: bytes, rate: int = 16000, width: int = 2, channels: int = 1, chunk_bytes: int = 2048
) -> List[Event]:
    """What Home Assistant sends: transcribe, audio-start, audio-chunks of 1024 samples, audio-stop."""
    events = [
        Transcribe(language="en").event(),
        AudioStart(rate=rate, width=width, channels=channels).event(),
    ]
    for offset in range(0, len(pcm), chunk_bytes):
        chunk = AudioChunk(
            rate=rate, width=width, channels=channels, audio=pcm[offset : offset + chunk_bytes]
        )
        events.append(chunk.event())
    events.append(AudioStop().event())
    return events


async def read_until(client: AsyncTcpClient, *types: str, timeout: float = 30.0) -> List[Event]:
    """Events until one of `types` (inclusive) or the connection's end."""
    seen: List[Event] = []
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout)
        if event is None:
            return seen
        seen.append(event)
        if event.type in types:
            return seen


async def wyoming_transcribe(port: int, events: List[Event], timeout: float = 30.0) -> List[Event]:
    """Send `events` on a new connection and return what came back up to the transcript (or an error)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
        return await read_until(client, "transcript", "error", timeout=timeout)


def texts(events: List[Event], kind: str) -> List[str]:
    return [str(e.data.get("text")) for e in events if e.type == kind]


def split_address(url: str) -> Tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)
