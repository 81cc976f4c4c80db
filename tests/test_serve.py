"""`edge-asr serve` with the tone model: the queue, audio conversion, both protocols, and what bad or
slow clients get. Real third-party clients with the default model: test_serve_clients.py; SIGTERM on a
real process: test_serve_process.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp")
pytest.importorskip("wyoming")

from serve_support import (  # noqa: E402
    ServerThread,
    audio_events,
    int16_pcm,
    read_until,
    split_address,
    texts,
    wav_bytes,
    wyoming_transcribe,
)
from tone_model import SAMPLE_RATE, SPEECH_TEXT, tone_audio  # noqa: E402
from wyoming.asr import Transcript, TranscriptChunk, TranscriptStart, TranscriptStop  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402

from edge_asr import EdgeTranscriber  # noqa: E402
from edge_asr.cli import main, parse_args  # noqa: E402
from edge_asr.serve.engine import Busy, Engine, ModelSlots, PcmInput, ServeLimits, pcm_array  # noqa: E402
from edge_asr.serve.wyoming_server import PROGRAM, STREAMING_PROGRAM  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


@pytest.fixture(scope="module")
def server(transcriber: EdgeTranscriber):
    with ServerThread(transcriber) as running:
        yield running


def post_audio(url: str, data: bytes, **fields: str) -> Tuple[int, Any, Dict[str, str]]:
    async def go() -> Tuple[int, Any, Dict[str, str]]:
        form = aiohttp.FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field("file", data, filename="clip.wav", content_type="audio/wav")
        endpoint = url + "/v1/audio/transcriptions"
        async with aiohttp.ClientSession() as session, session.post(endpoint, data=form) as response:
            body = await response.text()
            parsed = json.loads(body) if response.content_type == "application/json" else body
            return response.status, parsed, dict(response.headers)

    return asyncio.run(go())


# -- the queue and the audio conversion -----------------------------------------------------------------


def test_slots_run_n_queue_m_and_refuse_the_rest():
    async def scenario() -> None:
        slots = ModelSlots(running=1, queue=2, timeout=5.0)
        await slots.acquire()  # runs
        first = asyncio.ensure_future(slots.acquire())
        second = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert slots.waiting == 2
        with pytest.raises(Busy, match="--max-queue 2"):
            await slots.acquire()  # the queue is full: refused at once
        slots.release()  # passes to the first waiter, in order
        await asyncio.sleep(0)
        assert first.done() and not second.done() and slots.in_use == 1
        second.cancel()  # a client that went away leaves the queue
        await asyncio.sleep(0)
        assert slots.waiting == 0
        slots.release()
        assert slots.in_use == 0 and slots.peak_waiting == 2

    asyncio.run(scenario())


def test_a_request_that_waits_too_long_is_refused_as_busy():
    async def scenario() -> None:
        slots = ModelSlots(running=1, queue=5, timeout=0.05)
        await slots.acquire()
        with pytest.raises(Busy, match="--queue-timeout"):
            await slots.acquire()
        slots.release()
        await slots.acquire()  # the expired waiter did not take the slot
        assert slots.in_use == 1 and slots.waiting == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_pcm_width_decodes_to_the_same_samples(width):
    values = np.array([0.0, 0.5, -0.5, 0.25, -1.0], dtype=np.float64)
    if width == 1:
        raw = ((values * 128) + 128).clip(0, 255).astype(np.uint8).tobytes()
    elif width == 3:
        ints = (values * 2**23).clip(-(2**23), 2**23 - 1).astype("<i4")
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        dtype = "<i2" if width == 2 else "<i4"
        raw = (values * 2 ** (8 * width - 1)).astype(dtype).tobytes()
    stream = PcmInput(8000, width, 1)
    mono = np.concatenate([stream.mono(raw[:3]), stream.mono(raw[3:])])  # a chunk may end mid-frame
    assert mono.shape == (5,) and stream.frames == 5
    np.testing.assert_allclose(mono, values, atol=1 / 128)
    assert pcm_array(raw, width, 1).shape == (5, 1)


def test_bad_pcm_formats_are_refused():
    from edge_asr.errors import AudioError

    for rate, width, channels in [(4000, 2, 1), (16000, 5, 1), (16000, 2, 0), (16000, 2, 65), ("x", 2, 1)]:
        with pytest.raises(AudioError):
            PcmInput(rate, width, channels)


def test_limits_are_checked_as_flags():
    from edge_asr.errors import InputError

    with pytest.raises(InputError, match="--max-concurrent"):
        ServeLimits(max_concurrent=0).validate()
    with pytest.raises(InputError, match="--read-timeout"):
        ServeLimits(read_timeout=float("nan")).validate()


# -- the command line -----------------------------------------------------------------------------------


def test_serve_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["serve", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: edge-asr serve" in out and "--max-concurrent" in out and "--no-lm" in out
    assert main(["serve", "--http", ":8080"]) == 2
    assert "give the host" in capsys.readouterr().err
    assert main(["serve", "--wyoming", "udp://x:1"]) == 2
    assert "tcp://HOST:PORT" in capsys.readouterr().err
    assert main(["serve", "--max-queue", "-1"]) == 2
    assert "--max-queue" in capsys.readouterr().err


def test_without_the_serve_extra_the_error_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if it were not installed
    assert main(["serve"]) == 2
    assert "pip install '.[serve]'" in capsys.readouterr().err


def test_the_cli_does_not_import_the_server_libraries():
    code = "import sys, edge_asr.cli; print(sorted({'aiohttp', 'wyoming'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- Wyoming --------------------------------------------------------------------------------------------


def test_describe_returns_a_valid_info(server):
    async def go() -> Event:
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            await client.write_event(Describe().event())
            return (await read_until(client, "info"))[-1]

    info = Info.from_event(asyncio.run(go()))
    assert [p.name for p in info.asr] == [PROGRAM, STREAMING_PROGRAM]
    assert [p.supports_transcript_streaming for p in info.asr] == [False, True]
    model = info.asr[0].models[0]
    assert model.installed and model.languages == ["en"] and model.name == server.engine.model_name
    assert info.asr[0].version and info.asr[0].attribution.name == "edge-asr"


def test_wyoming_gives_the_text_transcribe_gives(server, transcriber, speech):
    events = asyncio.run(wyoming_transcribe(server.wyoming_port, audio_events(int16_pcm(speech))))
    assert [e.type for e in events] == ["transcript"]
    expected = transcriber.transcribe(speech, sample_rate=SAMPLE_RATE).text
    assert Transcript.from_event(events[0]).text == expected == SPEECH_TEXT


def test_any_rate_width_and_channel_count(server):
    from edge_asr.audio import resample

    at_44k = resample(tone_audio("fed cab"), SAMPLE_RATE, 44100)
    stereo = np.stack([at_44k, at_44k], axis=1)
    ints = (np.clip(stereo, -1, 1) * 2**23).astype("<i4").reshape(-1)
    pcm = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    events = audio_events(pcm, rate=44100, width=3, channels=2, chunk_bytes=1000)  # chunks end mid-frame
    assert texts(asyncio.run(wyoming_transcribe(server.wyoming_port, events)), "transcript") == ["fed cab"]


def test_several_requests_on_one_connection_and_an_audio_stop_without_audio(server, speech):
    async def go() -> List[Event]:
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            answers: List[Event] = []
            for events in (audio_events(int16_pcm(speech)), [AudioStop().event()], audio_events(b"")):
                for event in events:
                    await client.write_event(event)
                answers += await read_until(client, "transcript", "error")
            return answers

    assert texts(asyncio.run(go()), "transcript") == [SPEECH_TEXT, "", ""]


def streaming_audio() -> np.ndarray:
    return np.concatenate([tone_audio("ab cd"), silence(1.5), tone_audio("ef"), silence(0.3)])


def test_streaming_sends_an_utterance_while_audio_arrives_then_the_transcript(server):
    """The streaming program: transcript-start, a chunk per utterance as soon as it ends (before the
    client has sent all its audio), then the transcript (the chunks joined) and transcript-stop."""
    audio = streaming_audio()
    pcm = int16_pcm(audio)
    pause_end = 2 * (len(tone_audio("ab cd")) + int(1.5 * SAMPLE_RATE))  # bytes up to the second utterance

    async def go() -> Tuple[List[Event], List[Event]]:
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            await client.write_event(Event("select-program", {"name": STREAMING_PROGRAM}))
            for event in audio_events(pcm[:pause_end])[:-1]:  # no audio-stop yet
                await client.write_event(event)
            early = await read_until(client, "transcript-chunk", timeout=10)
            for offset in range(pause_end, len(pcm), 2048):
                chunk = AudioChunk(rate=SAMPLE_RATE, width=2, channels=1, audio=pcm[offset : offset + 2048])
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            return early, await read_until(client, "transcript-stop")

    early, late = asyncio.run(go())
    assert [e.type for e in early] == ["transcript-start", "transcript-chunk"]
    assert TranscriptStart.is_type(early[0].type)
    assert texts(early, "transcript-chunk") == ["ab cd"]  # arrived before the client sent audio-stop
    assert [e.type for e in late] == ["transcript-chunk", "transcript", "transcript-stop"]
    chunks = texts(early + late, "transcript-chunk")
    assert "".join(chunks) == texts(late, "transcript")[0] == "ab cd ef"
    assert TranscriptChunk.from_event(late[0]).text == " ef" and TranscriptStop.is_type(late[-1].type)


def test_the_streaming_program_can_be_the_default(transcriber, speech):
    with ServerThread(transcriber, streaming_first=True) as running:
        events = audio_events(int16_pcm(np.concatenate([speech, silence(0.3)])))
        answer = asyncio.run(wyoming_transcribe(running.wyoming_port, events))
    assert [e.type for e in answer] == ["transcript-start", "transcript-chunk", "transcript"]
    assert texts(answer, "transcript") == [SPEECH_TEXT]


async def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Write raw bytes, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return answer


def error_of(answer: bytes) -> Dict[str, Any]:
    header, _, rest = answer.partition(b"\n")
    event = json.loads(header)
    assert event["type"] == "error", answer[:200]
    data: Dict[str, Any] = json.loads(rest[: event["data_length"]])
    return data


@pytest.mark.parametrize(
    "garbage, code",
    [
        (b"\x00\xffnot json at all\n", "bad-event"),
        (b'{"type": "audio-chunk", "payload_length": 99999999999}\n', "bad-event"),  # never read
        (b'{"type": "audio-chunk", "data": {"rate": 16000}}\n', "bad-event"),  # width missing
        (  # refused at audio-start: its chunks are dropped until audio-stop, then the connection closes
            b'{"type": "audio-start", "data": {"rate": 16000, "width": 5, "channels": 1}}\n'
            b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 5, "channels": 1},'
            b' "payload_length": 5}\n'
            b'12345{"type": "audio-stop"}\n',
            "bad-audio",
        ),
        (b'{"type": "transcribe", "data": {"language": "de"}}\n', "unsupported-language"),
        (b'{"type": "select-program", "data": {"name": "whisper"}}\n', "bad-event"),
        (b"x" * 70000 + b"\n", "bad-event"),  # a header past 64 KB
    ],
)
def test_garbage_gets_an_error_event_and_the_server_goes_on(server, speech, garbage, code):
    answer = asyncio.run(raw_exchange(server.wyoming_port, garbage))
    assert error_of(answer)["code"] == code
    events = asyncio.run(wyoming_transcribe(server.wyoming_port, audio_events(int16_pcm(speech))))
    assert texts(events, "transcript") == [SPEECH_TEXT]


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_client_that_disconnects_mid_audio_frees_its_state(server, speech):
    for program in (PROGRAM, STREAMING_PROGRAM):

        async def go(program: str = program) -> None:
            async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
                await client.write_event(Event("select-program", {"name": program}))
                for event in audio_events(int16_pcm(speech))[:-3]:  # stops mid-audio and leaves
                    await client.write_event(event)
                await asyncio.sleep(0.2)
                assert server.engine.stats.active == 1

        before = server.engine.stats.failed
        asyncio.run(go())
        assert wait_until(lambda: server.engine.stats.active == 0)
        assert server.engine.stats.failed == before + 1
    events = asyncio.run(wyoming_transcribe(server.wyoming_port, audio_events(int16_pcm(speech))))
    assert texts(events, "transcript") == [SPEECH_TEXT]


def test_audio_past_the_limit_and_a_stalled_client_get_errors(transcriber, speech):
    limits = ServeLimits(max_audio_seconds=1.0, read_timeout=0.5)
    with ServerThread(transcriber, limits) as running:
        events = audio_events(int16_pcm(np.concatenate([speech, speech])))
        answer = asyncio.run(wyoming_transcribe(running.wyoming_port, events))
        assert answer[-1].type == "error" and answer[-1].data["code"] == "too-long"

        async def stall() -> List[Event]:
            async with AsyncTcpClient("127.0.0.1", running.wyoming_port) as client:
                await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
                return await read_until(client, "error", timeout=5)  # sends nothing more

        answer = asyncio.run(stall())
        assert answer[-1].data["code"] == "timeout"
        assert wait_until(lambda: running.engine.stats.active == 0)


def test_a_unix_socket_and_an_idle_connection(transcriber, speech, tmp_path):
    from wyoming.client import AsyncUnixClient

    from edge_asr.errors import InputError
    from edge_asr.serve.wyoming_server import WyomingService

    async def scenario() -> Tuple[List[str], Any]:
        engine = Engine(transcriber, ServeLimits(idle_timeout=0.3))
        service = WyomingService(engine, f"unix://{tmp_path / 'asr.sock'}")
        address = await service.start()
        assert address == f"unix://{tmp_path / 'asr.sock'}"
        async with AsyncUnixClient(tmp_path / "asr.sock") as client:
            for event in audio_events(int16_pcm(speech)):
                await client.write_event(event)
            answer = texts(await read_until(client, "transcript"), "transcript")
            closed = await asyncio.wait_for(client.read_event(), 5)  # idle past --idle-timeout: closed
        await service.stop(0)
        engine.close()
        return answer, closed

    answer, closed = asyncio.run(scenario())
    assert answer == [SPEECH_TEXT] and closed is None
    assert not (tmp_path / "asr.sock").exists()
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a socket"):
        asyncio.run(WyomingService(Engine(transcriber), f"unix://{tmp_path / 'notes.txt'}").start())
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# -- HTTP -----------------------------------------------------------------------------------------------


def test_http_response_formats(server, speech):
    data = wav_bytes(speech)
    status, body, _ = post_audio(server.http_url, data, model="whisper-1")
    assert status == 200 and body["text"] == SPEECH_TEXT and body["usage"]["type"] == "duration"
    status, body, headers = post_audio(server.http_url, data, response_format="text")
    assert status == 200 and body == SPEECH_TEXT + "\n" and headers["Content-Type"].startswith("text/plain")
    status, body, _ = post_audio(server.http_url, data, response_format="verbose_json", language="en")
    assert body["text"] == SPEECH_TEXT and body["language"] == "english"
    assert [w["word"] for w in body["words"]] == SPEECH_TEXT.split()
    assert body["segments"][0]["text"] == SPEECH_TEXT and body["segments"][0]["end"] > 0
    status, body, _ = post_audio(server.http_url, data, response_format="srt")
    assert body.startswith("1\n00:00:00,") and SPEECH_TEXT in body
    status, body, _ = post_audio(server.http_url, data, response_format="vtt")
    assert body.startswith("WEBVTT") and SPEECH_TEXT in body


@pytest.mark.parametrize(
    "fields, data, status, code",
    [
        ({"language": "de"}, "speech", 400, "unsupported_language"),
        ({"response_format": "xml"}, "speech", 400, "invalid_request"),
        ({}, b"this is no audio", 400, "invalid_audio"),
        ({}, b"RIFF\x24\x00\x00\x00WAVEfmt ", 400, "invalid_audio"),
    ],
)
def test_http_bad_requests_get_4xx_in_openai_shape(server, speech, fields, data, status, code):
    got, body, _ = post_audio(server.http_url, wav_bytes(speech) if data == "speech" else data, **fields)
    assert got == status and body["error"]["code"] == code and body["error"]["message"]
    assert body["error"]["param"] == (next(iter(fields)) if fields else "file")


def test_http_health_models_and_unknown_paths(server):
    async def go() -> List[Tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:
            out = []
            for method, path in [
                ("GET", "/health"),
                ("GET", "/v1/models"),
                ("GET", "/nope"),
                ("GET", "/v1/audio/transcriptions"),
            ]:
                async with session.request(method, server.http_url + path) as response:
                    out.append((response.status, await response.json()))
            async with session.post(server.http_url + "/v1/audio/transcriptions", data=b"x") as response:
                out.append((response.status, await response.json()))
            return out

    (health, models, missing, wrong_method, not_multipart) = asyncio.run(go())
    assert health[0] == 200 and health[1]["status"] == "ok" and health[1]["model"] == server.engine.model_name
    assert models[1]["data"][0]["id"] == server.engine.model_name
    assert missing[0] == 404 and "error" in missing[1]
    assert wrong_method[0] == 405
    assert not_multipart[0] == 400 and not_multipart[1]["error"]["code"] == "invalid_request"


def two_hour_wav_header() -> bytes:
    frames = 2 * 3600 * SAMPLE_RATE
    return wav_bytes(np.zeros(0, dtype=np.float32))[:40] + (2 * frames).to_bytes(4, "little")


def multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="long.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + two_hour_wav_header()


def test_a_two_hour_upload_is_refused_before_its_body_is_read(server):
    """Content-Length says 230 MB: 413 at once, the body is never read (and with `Expect: 100-continue`
    the client is told before it sends any)."""
    body_size = 2 * 2 * 3600 * SAMPLE_RATE + 300
    for expect in (False, True):
        head = (
            f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {body_size}\r\n"
            "Content-Type: multipart/form-data; boundary=BOUNDARY\r\n"
            + ("Expect: 100-continue\r\n" if expect else "")
            + "\r\n"
        ).encode()
        with socket.create_connection(split_address(server.http_url), timeout=10) as sock:
            sock.sendall(head if expect else head + multipart_head("BOUNDARY"))
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert b"upload_too_large" in answer and b"--max-upload-mb" in answer


def test_expect_100_continue_under_the_limit_and_a_stalled_upload(transcriber, speech):
    body = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        + wav_bytes(speech)
        + b"\r\n--B--\r\n"
    )
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    with ServerThread(transcriber, ServeLimits(read_timeout=0.5)) as running:
        with socket.create_connection(split_address(running.http_url), timeout=10) as sock:
            sock.sendall(head + b"Expect: 100-continue\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and SPEECH_TEXT.encode() in answer
        with socket.create_connection(split_address(running.http_url), timeout=10) as sock:
            sock.sendall(head + b"\r\n" + body[:100])  # then nothing more
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408") and b"--read-timeout" in answer
        assert wait_until(lambda: running.engine.stats.active == 0)


def test_a_chunked_upload_is_cut_off_at_the_limit(transcriber):
    """No Content-Length (chunked): the server reads up to --max-upload-mb, answers 413 and closes.

    The client is a raw socket that ignores the answer and would write for 30 s: what stops it is the
    server closing the connection (aiohttp drops what still comes for its 1 s lingering time first).
    Timed, not counted in bytes: a fast loopback moves hundreds of MB in that second."""
    import select

    with ServerThread(transcriber, ServeLimits(max_upload_mb=1.0)) as running:
        host, port = running.http_url.removeprefix("http://").rsplit(":", 1)
        sending_for = 30.0
        answer = b""
        with socket.create_connection((host, int(port)), timeout=1.0) as sock:
            sock.sendall(
                b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: multipart/form-data; boundary=BOUNDARY\r\n\r\n"
            )
            head = multipart_head("BOUNDARY")
            sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            chunk = b"%x\r\n%s\r\n" % (65536, bytes(65536))
            started = time.monotonic()
            while time.monotonic() - started < sending_for:
                if select.select([sock], [], [], 0)[0]:
                    try:
                        received = sock.recv(65536)
                    except OSError:
                        break
                    if not received:
                        break  # closed by the server
                    answer += received
                try:
                    sock.sendall(chunk)
                except socket.timeout:
                    continue  # not read any more, yet not closed: go on until the deadline
                except OSError:
                    break  # reset or broken pipe: closed by the server
            elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 413") and b"upload_too_large" in answer
        assert elapsed < sending_for / 3
        assert wait_until(lambda: running.engine.stats.active == 0)


def test_audio_longer_than_the_limit_is_refused_from_its_header(transcriber):
    with ServerThread(transcriber, ServeLimits(max_audio_seconds=2.0)) as running:
        status, body, _ = post_audio(running.http_url, wav_bytes(silence(3.0)))
    assert (
        status == 413
        and body["error"]["code"] == "audio_too_long"
        and "at most 2 s" in body["error"]["message"]
    )


# -- many clients at once -------------------------------------------------------------------------------


class SlowEngine(Engine):
    """The tone model takes microseconds; 0.2 s per transcription makes the queue fill up."""

    def transcribe_upload(self, data: bytes) -> Any:
        time.sleep(0.2)
        return super().transcribe_upload(data)

    def transcribe_samples(self, samples: np.ndarray) -> Any:
        time.sleep(0.2)
        return super().transcribe_samples(samples)


def test_twenty_clients_at_once_are_each_answered(transcriber, speech):
    """10 Wyoming and 10 HTTP clients at once, 1 running and 4 queued: every one gets the transcript or
    a busy error; the queue never holds more than 4; nothing is left behind."""
    engine = SlowEngine(transcriber, ServeLimits(max_concurrent=1, max_queue=4))
    with ServerThread(transcriber, engine=engine) as running:
        pcm, wav = int16_pcm(speech), wav_bytes(speech)

        async def wyoming_client() -> str:
            events = await wyoming_transcribe(running.wyoming_port, audio_events(pcm))
            last = events[-1]
            return str(last.data["text"]) if last.type == "transcript" else f"busy:{last.data['code']}"

        async def http_client(session: Any) -> str:
            form = aiohttp.FormData()
            form.add_field("file", wav, filename="a.wav")
            async with session.post(running.http_url + "/v1/audio/transcriptions", data=form) as response:
                body = await response.json()
                if response.status == 200:
                    return str(body["text"])
                assert response.status == 503 and response.headers["Retry-After"]
                return f"busy:{body['error']['code']}"

        async def go() -> List[str]:
            async with aiohttp.ClientSession() as session:
                jobs = [wyoming_client() for _ in range(10)] + [http_client(session) for _ in range(10)]
                return list(await asyncio.gather(*jobs))

        answers = asyncio.run(go())
        done = [a for a in answers if not a.startswith("busy")]
        busy = [a for a in answers if a.startswith("busy")]
        assert len(answers) == 20 and set(done) == {SPEECH_TEXT} and len(done) >= 5
        assert busy and set(busy) <= {"busy:busy", "busy:server_busy"}
        assert engine.slots.peak_waiting == 4
        stats = engine.stats
        assert wait_until(lambda: stats.active == 0 and engine.slots.in_use == 0)  # the last log lines
        assert stats.requests == 20 and stats.completed == len(done) and stats.busy == len(busy)


# -- grammars (voice commands) --------------------------------------------------------------------------

COMMANDS = "# tone commands\n(bad | deaf) {food}\nface bead\n{food} = cafe:drink | cab:ride\n"


def test_http_grammar_returns_the_phrase_and_its_slots(server):
    pytest.importorskip("hassil")
    compiled_before = server.engine.grammars.compiled
    status, body, _ = post_audio(server.http_url, wav_bytes(tone_audio("bad cafe")), grammar=COMMANDS)
    assert status == 200, body
    assert body["text"] == body["phrase"] == "bad cafe" and body["slots"] == {"food": "drink"}
    assert body["confidence"] > 0.9 and body["alternatives"][0]["phrase"] == "bad cafe"
    status, body, _ = post_audio(
        server.http_url, wav_bytes(tone_audio("face bead")), grammar=COMMANDS, response_format="text"
    )
    assert status == 200 and body == "face bead\n"
    assert server.engine.grammars.compiled == compiled_before + 1  # the second request used the cache
    plain = "bad cafe\nface bead  # no templates\n"
    status, body, _ = post_audio(
        server.http_url, wav_bytes(tone_audio("face bead")), grammar=plain, response_format="verbose_json"
    )
    assert status == 200 and body["phrase"] == "face bead" and body["slots"] == {}


def test_http_audio_outside_the_grammar_is_no_command(server):
    status, body, _ = post_audio(server.http_url, wav_bytes(tone_audio("ace")), grammar="bad cafe\nface bead")
    assert status == 200 and body["phrase"] is None and body["text"] == "" and body["heard"] == "ace"
    status, body, _ = post_audio(
        server.http_url, wav_bytes(tone_audio("ace")), grammar="bad cafe", response_format="text"
    )
    assert status == 200 and body == ""
    # min_confidence 0 takes the best phrase, however poor
    status, body, _ = post_audio(
        server.http_url, wav_bytes(tone_audio("ace")), grammar="bad cafe", min_confidence="0"
    )
    assert status == 200 and body["phrase"] == "bad cafe"


@pytest.mark.parametrize(
    "fields, param, message",
    [
        ({"grammar": "turn on (the\n"}, "grammar", "cannot parse template"),
        ({"grammar": "turn on {room}\n"}, "grammar", "room"),
        ({"grammar": "bad cafe 2x"}, "grammar", "cannot spell"),
        ({"grammar": "# only a comment\n"}, "grammar", None),  # no grammar: plain text
        ({"grammar": "bad cafe", "min_confidence": "2"}, "min_confidence", "between 0 and 1"),
        ({"grammar": "bad cafe", "response_format": "srt"}, "response_format", "grammar"),
        ({"grammar": "bad cafe\n" * 30_000}, "grammar", "too long"),
    ],
)
def test_http_bad_grammars_get_400(server, fields, param, message):
    if "(" in fields["grammar"] or "{" in fields["grammar"]:
        pytest.importorskip("hassil")
    status, body, _ = post_audio(server.http_url, wav_bytes(tone_audio("bad cafe")), **fields)
    if message is None:  # comments only: the grammar field is not empty, the grammar is
        assert status == 400 and "no phrases" in body["error"]["message"]
        return
    assert status == 400 and body["error"]["param"] == param and message in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


def test_wyoming_grammar_in_the_transcribe_context(server):
    pytest.importorskip("hassil")

    def command_events(audio: np.ndarray, **context: Any) -> List[Event]:
        events = audio_events(int16_pcm(audio))
        events[0] = Event(type="transcribe", data={"language": "en", "context": context})
        return events

    async def go() -> List[List[Event]]:
        answers = []
        async with AsyncTcpClient("127.0.0.1", server.wyoming_port) as client:
            for events in (
                command_events(tone_audio("bad cab"), grammar=COMMANDS),
                command_events(tone_audio("ace"), grammar=COMMANDS, min_confidence=0.5),
                audio_events(int16_pcm(tone_audio("abc fed"))),  # the grammar was for one request only
            ):
                for event in events:
                    await client.write_event(event)
                answers.append(await read_until(client, "transcript", "error"))
        return answers

    command, none, plain = asyncio.run(go())
    transcript = Transcript.from_event(command[-1])
    assert transcript.text == "bad cab" and transcript.context is not None
    assert transcript.context["command"]["slots"] == {"food": "ride"}
    assert Transcript.from_event(none[-1]).text == ""
    assert none[-1].data["context"]["command"]["phrase"] is None
    assert Transcript.from_event(plain[-1]).text == "abc fed"
    bad = command_events(tone_audio("bad cafe"), grammar="turn on (the")
    events = asyncio.run(wyoming_transcribe(server.wyoming_port, bad))
    assert events[-1].type == "error" and events[-1].data["code"] == "bad-grammar"


# -- issue 29: hostile requests -------------------------------------------------------------------------


def raw_post(url: str, content_type: str, body: bytes, timeout: float = 10) -> bytes:
    """One POST /v1/audio/transcriptions written by hand (malformed on purpose), and the whole answer."""
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(split_address(url), timeout=timeout) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data", b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nxx\r\n--B--\r\n'),
        ("multipart/form-data; boundary=B", b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nxx'),
        ("multipart/form-data; boundary=B", b"no boundary anywhere"),
    ],
    ids=["no-boundary", "no-closing-boundary", "no-parts"],
)
def test_malformed_multipart_is_a_400_with_one_line_and_no_traceback(server, caplog, content_type, body):
    answer = raw_post(server.http_url, content_type, body)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["code"] == "invalid_request" and "multipart/form-data body is malformed" in error["message"]
    assert "\n" not in error["message"]
    assert wait_until(lambda: server.engine.stats.active == 0)
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


def open_length_flac(samples: np.ndarray) -> bytes:
    """A FLAC whose STREAMINFO leaves the length open (total samples 0), as streaming encoders write it:
    libsndfile then reports 2**63 - 1 frames."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="FLAC")
    data = bytearray(buffer.getvalue())
    fields = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # rate, channels, bits; no total
    data[18:26] = fields.to_bytes(8, "big")
    return bytes(data)


def test_a_flac_of_open_length_is_decoded_with_the_cap(transcriber, speech):
    with ServerThread(transcriber, ServeLimits(max_audio_seconds=2.0)) as running:
        status, body, _ = post_audio(running.http_url, open_length_flac(speech))
        assert status == 200 and body["text"] == SPEECH_TEXT
        long_flac = open_length_flac(np.concatenate([speech, silence(3.0)]))
        for fields in ({}, {"grammar": "bad cafe\nface bead"}):
            status, body, _ = post_audio(running.http_url, long_flac, **fields)
            error = body["error"]
            assert status == 413 and error["code"] == "audio_too_long", body
            assert "runs past 2 s" in error["message"] and "576460752303424" not in error["message"]


def test_the_server_never_swaps_file_descriptor_2(transcriber, speech, monkeypatch):
    """Swapping fd 2 around each decode is process-wide: two at once (--max-concurrent 2) left stderr on
    a deleted file and every later log line was lost. The server's decodes swap nothing."""
    import os

    from edge_asr import audio

    swaps: List[Tuple[int, int]] = []
    real_dup2 = os.dup2
    monkeypatch.setattr(os, "dup2", lambda a, b, *rest: swaps.append((a, b)) or real_dup2(a, b, *rest))
    engine = Engine(transcriber, ServeLimits(max_concurrent=2))
    with ServerThread(transcriber, engine=engine) as running:
        status, body, _ = post_audio(running.http_url, wav_bytes(speech))
        assert status == 200 and body["text"] == SPEECH_TEXT
    assert [swap for swap in swaps if swap[1] == 2] == []
    monkeypatch.setattr(audio, "_REDIRECT_NATIVE_STDERR", [True])  # as on the command line (no server)
    with audio._native_stderr_to_log("a file"):  # the command line still keeps libmpg123 quiet
        pass
    assert [swap for swap in swaps if swap[1] == 2]


def test_slow_clients_meet_the_request_deadline(transcriber, speech):
    """A body at 100 bytes per 0.2 s, Wyoming audio in 2-byte chunks, headers a byte at a time: each
    sends often enough for --read-timeout, but not its whole input within --request-timeout (Wyoming:
    plus the duration of its audio), so it ends there and its slot is free again."""
    limits = ServeLimits(read_timeout=0.5, request_timeout=1.0, idle_timeout=1.0)
    with ServerThread(transcriber, limits) as running:
        body = (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            + wav_bytes(speech)
            + b"\r\n--B--\r\n"
        )
        head = (
            "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.monotonic()
        answer = b""
        with socket.create_connection(split_address(running.http_url), timeout=10) as sock:
            sock.sendall(head)
            for offset in range(0, len(body), 100):
                try:
                    sock.sendall(body[offset : offset + 100])
                except OSError:
                    break
                sock.settimeout(0.2)
                try:
                    answer = sock.recv(65536)
                except socket.timeout:
                    continue
                break
        assert answer.startswith(b"HTTP/1.1 408") and b"--request-timeout" in answer, answer[:200]
        assert time.monotonic() - started < 3

        async def trickle() -> List[Event]:
            async with AsyncTcpClient("127.0.0.1", running.wyoming_port) as client:
                await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
                for _ in range(40):
                    await client.write_event(
                        AudioChunk(rate=16000, width=2, channels=1, audio=b"\0\0").event()
                    )
                    try:
                        return await read_until(client, "error", timeout=0.1)
                    except asyncio.TimeoutError:
                        pass
                return []

        started = time.monotonic()
        answer_events = asyncio.run(trickle())
        assert answer_events and answer_events[-1].data["code"] == "timeout"
        assert "--request-timeout" in answer_events[-1].data["text"] and time.monotonic() - started < 3

        with socket.create_connection(split_address(running.http_url), timeout=0.1) as sock:
            started = time.monotonic()
            closed = False
            for byte in head[:-2]:  # headers that never end, a byte per 0.1 s: closed at --idle-timeout
                try:
                    sock.sendall(bytes([byte]))
                    closed = sock.recv(65536) == b""
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
                if closed:
                    break
            assert closed and time.monotonic() - started < 3
        assert wait_until(lambda: running.engine.stats.active == 0)
        events = asyncio.run(wyoming_transcribe(running.wyoming_port, audio_events(int16_pcm(speech))))
        assert texts(events, "transcript") == [SPEECH_TEXT]


def million_phrase_template() -> str:
    """`set {a} {b} {c}` with three lists of 100 values (5.5 KB): 1,000,000 phrases, which took 44-58 s
    and 2.8 GB to compile, and the server kept each distinct one."""
    tens = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    values = [f"{tens[i // 10]} {tens[i % 10]}" for i in range(100)]
    lists = [f"{{{name}}} = " + " | ".join(f"{name} lvl {v}" for v in values) for name in "abc"]
    return "\n".join(["set {a} {b} {c}", *lists]) + "\n"


def test_a_million_phrase_grammar_is_refused_before_it_is_expanded(server):
    pytest.importorskip("hassil")
    template = million_phrase_template()
    assert 5000 < len(template) < 6000
    started = time.monotonic()
    status, body, _ = post_audio(server.http_url, wav_bytes(tone_audio("bad cafe")), grammar=template)
    assert time.monotonic() - started < 2
    assert (
        status == 400 and body["error"]["code"] == "invalid_grammar" and body["error"]["param"] == "grammar"
    )
    assert "expand to 1000000 phrases, and at most 100000 are taken" in body["error"]["message"]


def test_the_grammar_cache_is_bounded_in_bytes(transcriber):
    from edge_asr.serve.grammars import GrammarCache

    grammars = [f"bad cafe\nface bead\n{'abc ' * n}fed" for n in range(1, 6)]
    one = transcriber.compile_grammar(parse_grammar_text(grammars[0])).nbytes
    cache = GrammarCache(transcriber, max_bytes=int(2.5 * one), max_phrases=10)
    for text in grammars:
        cache.get(text)
    assert len(cache) == 2 and cache.nbytes <= 2.5 * one
    cache.get(grammars[-1])
    assert cache.compiled == 5  # the last one was kept
    with pytest.raises(Exception, match="more than 10 phrases"):
        cache.get("\n".join(f"{'ab ' * n}cafe" for n in range(1, 12)))


def parse_grammar_text(text: str) -> Any:
    from edge_asr.serve.grammars import parse_grammar

    return parse_grammar(text)


def slow_grammar(salt: str) -> str:
    """`{x} {y}` over two lists of 316 words the tone model spells: 99,856 phrases (under
    --max-grammar-phrases), about 1.4 s to expand and compile on the 2-core dev machine. `salt` (a
    comment) makes each test's text, and so its cache key, its own."""
    words = " | ".join("".join(w) for w in itertools.islice(itertools.product("abcdef", repeat=4), 316))
    return f"# {salt}\n{{x}} {{y}}\n{{x}} = {words}\n{{y}} = {words}\n"


def nested_rules(copies: int, levels: int) -> str:
    """<r0> = (on|off), each <rN> = `copies` x <rN-1>, `turn <rN>`: 2**(copies**levels) phrases (the
    449-byte template of issue 29 is nested_rules(8, 9))."""
    lines = ["<r0> = (on|off)"]
    lines += [f"<r{n}> = " + " ".join([f"<r{n - 1}>"] * copies) for n in range(1, levels + 1)]
    return "\n".join([*lines, f"turn <r{levels}>"]) + "\n"


def watch_compiling(engine: Engine, monkeypatch: Any) -> Dict[str, Any]:
    """Events set when `engine` starts and ends compiling a grammar, and how the last one ended."""
    seen: Dict[str, Any] = {"started": threading.Event(), "ended": threading.Event(), "error": None}
    get = engine.grammars.get

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen["ended"].clear()
        seen["started"].set()
        try:
            return get(*args, **kwargs)
        except BaseException as exc:
            seen["error"] = exc
            raise
        finally:
            seen["ended"].set()

    monkeypatch.setattr(engine.grammars, "get", watched)
    return seen


def test_a_grammar_compiles_while_other_requests_are_answered(transcriber, speech, monkeypatch):
    """Issue 29: a grammar sent with a request compiled on the model thread, so every other request
    waited for it (3.3 s at the default --max-grammar-phrases). It compiles on a thread of its own now,
    and plain HTTP and Wyoming requests are answered while it does."""
    pytest.importorskip("hassil")
    engine = Engine(transcriber, ServeLimits(max_concurrent=1))
    seen = watch_compiling(engine, monkeypatch)
    with ServerThread(transcriber, engine=engine) as running:
        answers = {}

        def command() -> None:
            audio = wav_bytes(tone_audio("abcd bcde"))
            answers["command"] = post_audio(running.http_url, audio, grammar=slow_grammar("in flight"))

        sender = threading.Thread(target=command)
        sender.start()
        assert seen["started"].wait(10)
        started = time.monotonic()
        status, body, _ = post_audio(running.http_url, wav_bytes(speech))
        events = asyncio.run(wyoming_transcribe(running.wyoming_port, audio_events(int16_pcm(speech))))
        # refused from its count, without waiting for the grammar thread
        refused, error, _ = post_audio(running.http_url, wav_bytes(speech), grammar=nested_rules(8, 9))
        waited = time.monotonic() - started
        still_compiling = not seen["ended"].is_set()
        sender.join(60)
    assert status == 200 and body["text"] == SPEECH_TEXT and texts(events, "transcript") == [SPEECH_TEXT]
    assert refused == 400 and error["error"]["code"] == "invalid_grammar", error
    assert still_compiling, f"the other requests waited for the grammar ({waited:.2f} s)"
    status, body, _ = answers["command"]
    assert status == 200 and body["phrase"] == "abcd bcde", body


def test_a_grammar_that_misses_the_deadline_gets_a_timeout_and_stops_compiling(
    transcriber, speech, monkeypatch
):
    """Issue 29: a grammar's compilation was bounded only by the phrase cap, never by the request's
    deadline, and could not be stopped. Now the request gets its timeout error at its deadline
    (--request-timeout, 0.5 s here), and the compilation, wanted by nobody, stops at its next check:
    the grammar thread is free for the next grammar at once."""
    pytest.importorskip("hassil")
    engine = Engine(transcriber, ServeLimits(request_timeout=0.5))
    seen = watch_compiling(engine, monkeypatch)
    with ServerThread(transcriber, engine=engine) as running:
        started = time.monotonic()
        status, body, _ = post_audio(running.http_url, wav_bytes(speech), grammar=slow_grammar("http"))
        assert time.monotonic() - started < 1.5
        assert status == 408 and body["error"]["code"] == "timeout", body
        message = body["error"]["message"]
        assert "grammar to compile" in message and "--request-timeout" in message
        from edge_asr.serve.grammars import Abandoned

        assert seen["ended"].wait(1) and isinstance(seen["error"], Abandoned)

        events = audio_events(b"")  # no audio: its deadline is --request-timeout from audio-start
        events[0] = Event(type="transcribe", data={"context": {"grammar": slow_grammar("wyoming")}})
        started = time.monotonic()
        answer = asyncio.run(wyoming_transcribe(running.wyoming_port, events))
        assert time.monotonic() - started < 1.5
        assert answer[-1].type == "error" and answer[-1].data["code"] == "timeout", answer
        assert seen["ended"].wait(1) and isinstance(seen["error"], Abandoned)

        # The grammar thread is free: a small grammar compiles well within the 0.5 s
        status, body, _ = post_audio(running.http_url, wav_bytes(tone_audio("bad cafe")), grammar=COMMANDS)
        assert status == 200 and body["phrase"] == "bad cafe", body
        assert engine.grammars.compiling == 0 and len(engine.grammars) == 1  # the abandoned ones not kept
        assert wait_until(lambda: engine.stats.active == 0)


def test_requests_that_bring_the_same_new_grammar_share_its_compilation(transcriber):
    """One compilation for two requests at once; the one that gives up early (its deadline) does not
    stop it for the other; the grammar is kept for the next."""
    pytest.importorskip("hassil")
    from edge_asr.serve.engine import Timeout
    from edge_asr.serve.grammars import GrammarCache

    cache = GrammarCache(transcriber)
    text = slow_grammar("shared")

    def deadline(seconds: float) -> Any:
        end = time.monotonic() + seconds

        def left() -> float:
            if time.monotonic() >= end:
                raise Timeout("deadline")
            return end - time.monotonic()

        return left

    async def go() -> List[Any]:
        impatient = cache.compile(text, "grammar", deadline(0.2))
        patient = cache.compile(text, "grammar", deadline(60))
        return list(await asyncio.gather(impatient, patient, return_exceptions=True))

    try:
        gave_up, compiled = asyncio.run(go())
        assert isinstance(gave_up, Timeout) and len(compiled.grammar) == 99_856
        assert cache.compiled == 1 and cache.compiling == 0 and cache.cached(text) is compiled
    finally:
        cache.close()
