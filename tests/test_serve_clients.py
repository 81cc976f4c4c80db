"""`edge-asr serve` against real third-party clients, with the shipped default model and its samples:
the official `openai` Python client and the `wyoming` package's own client, sending what Home Assistant
sends. Each gets the text `EdgeTranscriber.transcribe` gives for the same file."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import List

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("wyoming")
openai = pytest.importorskip("openai")

from serve_support import ServerThread, read_until, texts, wyoming_transcribe  # noqa: E402
from wyoming.asr import Transcribe  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop, wav_to_chunks  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event  # noqa: E402

from edge_asr import EdgeTranscriber  # noqa: E402
from edge_asr.serve.wyoming_server import STREAMING_PROGRAM  # noqa: E402

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "edge_asr" / "samples").glob("*.wav"))


@pytest.fixture(scope="module")
def default_model() -> EdgeTranscriber:
    return EdgeTranscriber()


@pytest.fixture(scope="module")
def server(default_model):
    with ServerThread(default_model) as running:
        yield running


@pytest.fixture(scope="module")
def expected(default_model):
    return {path.name: default_model.transcribe(path).text for path in SAMPLES}


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.http_url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_the_openai_client_gets_the_text_of_transcribe(client, expected, path):
    with open(path, "rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert result.text == expected[path.name] and result.text


def test_the_openai_client_reads_every_response_format(client, expected):
    path = SAMPLES[0]
    with open(path, "rb") as audio:
        verbose = client.audio.transcriptions.create(
            model="edge-asr-default-en",
            file=audio,
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert verbose.text == expected[path.name] and verbose.language == "english"
    assert verbose.words and " ".join(w.word for w in verbose.words) == verbose.text
    assert verbose.segments and " ".join(s.text for s in verbose.segments) == verbose.text
    assert 0 < verbose.words[-1].end <= verbose.duration
    for response_format in ("text", "srt", "vtt"):
        with open(path, "rb") as audio:
            rendered = client.audio.transcriptions.create(
                model="whisper-1", file=audio, response_format=response_format
            )
        assert isinstance(rendered, str) and expected[path.name].split()[-1] in rendered
    assert client.models.list().data[0].id == "edge-asr-default-en"


def test_the_openai_client_shows_our_error_messages(client):
    with pytest.raises(openai.BadRequestError, match="not served"), open(SAMPLES[0], "rb") as audio:
        client.audio.transcriptions.create(model="whisper-1", file=audio, language="fr")
    with pytest.raises(openai.BadRequestError, match="not a readable audio file"):
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"just text"))


def ha_events(path: Path) -> List[Event]:
    """Exactly what Home Assistant's Wyoming STT sends: transcribe, audio-start, 1024-sample chunks, stop."""
    events = [Transcribe(language="en").event()]
    with wave.open(str(path), "rb") as wav:
        events += [e.event() for e in wav_to_chunks(wav, 1024, start_event=True, stop_event=True)]
    return events


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_the_wyoming_client_gets_the_text_of_transcribe(server, expected, path):
    answer = asyncio.run(wyoming_transcribe(server.wyoming_port, ha_events(path)))
    assert texts(answer, "transcript") == [expected[path.name]]


def test_wyoming_streaming_with_the_default_model(server, default_model):
    """Two samples with a pause between: the first utterance arrives as a chunk while the second is
    still being sent, then the transcript (the chunks joined) and transcript-stop."""
    rate = 16000
    first, second = (default_model_samples(path) for path in SAMPLES[:2])
    pause = np.zeros(int(1.5 * rate), dtype=np.int16)
    head = np.concatenate([first, pause]).tobytes()
    tail = np.concatenate([second, np.zeros(int(0.3 * rate), dtype=np.int16)]).tobytes()

    async def go() -> List[Event]:
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            await client.write_event(Event("select-program", {"name": STREAMING_PROGRAM}))
            await client.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            for offset in range(0, len(head), 2048):
                await client.write_event(
                    AudioChunk(rate=rate, width=2, channels=1, audio=head[offset : offset + 2048]).event()
                )
            seen = await read_until(client, "transcript-chunk", timeout=30)  # before the rest is sent
            for offset in range(0, len(tail), 2048):
                await client.write_event(
                    AudioChunk(rate=rate, width=2, channels=1, audio=tail[offset : offset + 2048]).event()
                )
            await client.write_event(AudioStop().event())
            return seen + await read_until(client, "transcript-stop", timeout=30)

    events = asyncio.run(go())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["transcript-start", "transcript-chunk"] and kinds[-2:] == [
        "transcript",
        "transcript-stop",
    ]
    chunks = texts(events, "transcript-chunk")
    assert len(chunks) == 2 and "".join(chunks) == texts(events, "transcript")[0]
    # The streaming decoder reads 2.5 s windows, so its words may differ a little from the file's.
    assert len(chunks[0].split()) >= 6


def default_model_samples(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == 16000 and wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
