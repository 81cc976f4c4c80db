"""`edge-asr serve` as a real process: SIGTERM while requests are in flight. Requests that complete within
--shutdown-timeout get their answer, one that does not gets an error event, idle connections and new
ones are closed or refused, and the process exits 0."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("wyoming")

from serve_support import audio_events, int16_pcm, read_until, split_address, texts, wav_bytes  # noqa: E402
from tone_model import SPEECH_TEXT  # noqa: E402
from wyoming.audio import AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def start_server(bundle: Path, *flags: str) -> Tuple[subprocess.Popen[str], Dict[str, str], queue.Queue[str]]:
    command = [sys.executable, "-m", "edge_asr", "serve", "--model", str(bundle)]
    command += ["--wyoming", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0", *flags]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None

    def pump() -> None:
        for line in process.stderr or []:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    addresses: Dict[str, str] = {}
    deadline = time.monotonic() + 60
    while len(addresses) < 2 and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            assert process.poll() is None, "the server exited"
            continue
        found = re.search(r"INFO (wyoming|http): serving \S+ on (\S+)", line)
        if found:
            addresses[found.group(1)] = found.group(2)
    assert len(addresses) == 2, "the server did not say where it listens"
    return process, addresses, lines


def recv_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """What the server sends until it closes the connection (both answers here close it)."""
    sock.settimeout(timeout)
    parts = []
    while True:
        part = sock.recv(65536)
        if not part:
            break
        parts.append(part)
        if b"\r\n\r\n" in b"".join(parts) and b"Connection: close" not in b"".join(parts):
            head, _, body = b"".join(parts).partition(b"\r\n\r\n")
            length = re.search(rb"Content-Length: (\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    sock.close()
    return b"".join(parts)


def http_request_head(length: int) -> bytes:
    return (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(tone_bundle: Path, speech: np.ndarray) -> None:
    process, addresses, lines = start_server(tone_bundle, "--shutdown-timeout", "3")
    try:
        wyoming_port = split_address(addresses["wyoming"])[1]
        http_address = split_address(addresses["http"])
        pcm = int16_pcm(speech)
        events = audio_events(pcm)[:-1]
        half = len(events) // 2
        body = (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            + wav_bytes(speech)
            + b"\r\n--B--\r\n"
        )

        async def scenario() -> Dict[str, object]:
            finishing = AsyncTcpClient("127.0.0.1", wyoming_port)  # will finish its audio in time
            stalled = AsyncTcpClient("127.0.0.1", wyoming_port)  # never sends audio-stop
            idle = AsyncTcpClient("127.0.0.1", wyoming_port)  # connected, no request
            for client in (finishing, stalled, idle):
                await client.connect()
            for event in events[:half]:
                await finishing.write_event(event)
            for event in events[:3]:
                await stalled.write_event(event)
            upload = socket.create_connection(http_address)  # an upload half sent, finished later
            upload.sendall(http_request_head(len(body)) + body[: len(body) // 2])
            stalled_upload = socket.create_connection(http_address)  # never finished
            stalled_upload.sendall(http_request_head(len(body)) + body[: len(body) // 3])
            await asyncio.sleep(0.5)

            process.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            await asyncio.sleep(0.5)
            refused = []
            for port in (wyoming_port, http_address[1]):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                    refused.append(False)
                except OSError:
                    refused.append(True)
            idle_closed = await asyncio.wait_for(idle.read_event(), 5) is None

            for event in events[half:]:
                await finishing.write_event(event)
            await finishing.write_event(AudioStop().event())
            finished = await read_until(finishing, "transcript", "error", timeout=5)
            upload.sendall(body[len(body) // 2 :])
            http_answer = recv_all(upload)
            stalled_answer = await read_until(stalled, "error", timeout=10)
            stalled_http = recv_all(stalled_upload)
            waited = time.monotonic() - sent_at
            for client in (finishing, stalled, idle):
                await client.disconnect()
            return {
                "refused": refused,
                "idle_closed": idle_closed,
                "finished": texts(finished, "transcript"),
                "http": http_answer,
                "stalled": [e.data.get("code") for e in stalled_answer if e.type == "error"],
                "stalled_http": stalled_http,
                "waited": waited,
            }

        outcome = asyncio.run(scenario())
        assert outcome["refused"] == [True, True]  # no new connections once stopping
        assert outcome["idle_closed"]
        assert outcome["finished"] == [SPEECH_TEXT]
        answer = outcome["http"]
        assert (
            isinstance(answer, bytes)
            and answer.startswith(b"HTTP/1.1 200")
            and SPEECH_TEXT.encode() in answer
        )
        assert outcome["stalled"] == ["shutdown"]
        stalled_http = outcome["stalled_http"]
        assert isinstance(stalled_http, bytes) and stalled_http.startswith(b"HTTP/1.1 503")
        assert b"shutting_down" in stalled_http
        assert 2.0 < float(str(outcome["waited"])) < 8.0  # the 3 s grace, then the error
        assert process.wait(timeout=20) == 0
        log: List[str] = []
        while not lines.empty():
            log.append(lines.get())
        text = "".join(log)
        assert "stopping:" in text and "stopped:" in text and "Traceback" not in text
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
