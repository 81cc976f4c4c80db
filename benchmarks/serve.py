"""Throughput and latency of `edge-asr serve` against `EdgeTranscriber.transcribe` on the same clips.

    python benchmarks/serve.py [--model BUNDLE] [--clients 1,2,4] [--configs 1x2,2x1,2x2] [--requests 12]

Makes 5 s clips from edge_asr/samples/ (the samples end to end, cut into 5 s pieces), then:

1. direct: `EdgeTranscriber.transcribe` on each clip's file, one after another, in this process (the model
   time a request cannot go below);
2. for each server configuration `CxT` (--max-concurrent C, --threads T): starts `edge-asr serve` in a
   child process (HTTP and Wyoming on 127.0.0.1), and for 1, 2 and 4 concurrent clients sends
   --requests requests in all, each client one after another: HTTP as OpenAI's clients do (multipart
   upload, json answer), Wyoming as Home Assistant does (a new connection, transcribe, audio-start,
   1024-sample chunks as fast as the socket takes them, audio-stop, transcript).

Prints requests/s and p50/p95 latency (from the first byte sent to the answer) per protocol, clients and
configuration, and the server's overhead at 1 client: the median over requests of (request latency /
latency of a direct `transcribe` of the same clip run just before it) - 1 (paired, so that load changes
on a shared machine cancel out; the 1-client req/s leaves those direct runs out of the time). Clients
run in this process, so on a small machine they take CPU from the server as real clients on the same
box would. `--json FILE` also writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr import EdgeTranscriber  # noqa: E402
from edge_asr.audio import read_audio  # noqa: E402

RATE = 16000
CLIP_SECONDS = 5.0


def make_clips(seconds: float = CLIP_SECONDS) -> List[np.ndarray]:
    """The bundled samples end to end (0.3 s apart), cut into whole pieces of `seconds`."""
    pause = np.zeros(int(0.3 * RATE), dtype=np.float32)
    parts: List[np.ndarray] = []
    for path in sorted((ROOT / "edge_asr" / "samples").glob("*.wav")):
        parts += [read_audio(path, RATE), pause]
    audio = np.concatenate(parts * 2)
    size = int(seconds * RATE)
    return [audio[i : i + size] for i in range(0, len(audio) - size + 1, size)]


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes())
    return buffer.getvalue()


def summary(latencies: List[float], wall: float) -> Dict[str, float]:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        "requests": len(ordered),
        "requests_per_s": len(ordered) / wall,
        "p50_s": statistics.median(ordered),
        "p95_s": p95,
    }


def direct(transcriber: EdgeTranscriber, paths: List[Path], requests: int) -> Dict[str, float]:
    transcriber.transcribe(paths[0])  # warm-up
    latencies = []
    started = time.perf_counter()
    for index in range(requests):
        begin = time.perf_counter()
        transcriber.transcribe(paths[index % len(paths)])
        latencies.append(time.perf_counter() - begin)
    return summary(latencies, time.perf_counter() - started)


class Server:
    """`edge-asr serve` in a child process on ports the system picks."""

    def __init__(self, model: Optional[str], concurrent: int, threads: int):
        command = [sys.executable, "-m", "edge_asr", "serve", "--wyoming", "tcp://127.0.0.1:0"]
        command += ["--http", "127.0.0.1:0", "--max-concurrent", str(concurrent), "--threads", str(threads)]
        command += ["--max-queue", "64"] + (["--model", model] if model else [])
        self.process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.addresses: Dict[str, Tuple[str, int]] = {}
        deadline = time.monotonic() + 120
        while len(self.addresses) < 2:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("edge-asr serve did not start")
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            found = re.search(r"INFO (wyoming|http): serving \S+ on \w+://(\S+):(\d+)", line)
            if found:
                self.addresses[found.group(1)] = (found.group(2), int(found.group(3)))

    def _pump(self) -> None:
        for line in self.process.stderr or []:
            self.lines.put(line)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


async def http_request(session: Any, url: str, data: bytes) -> float:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("file", data, filename="clip.wav", content_type="audio/wav")
    begin = time.perf_counter()
    async with session.post(url, data=form) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body}")
    return time.perf_counter() - begin


async def wyoming_request(host: str, port: int, events: List[Any]) -> float:
    from wyoming.client import AsyncTcpClient

    begin = time.perf_counter()
    async with AsyncTcpClient(host, port) as client:
        for event in events:
            await client.write_event(event)
        while True:
            event = await client.read_event()
            if event is None or event.type == "error":
                raise RuntimeError(f"wyoming: {event}")
            if event.type == "transcript":
                break
    return time.perf_counter() - begin


def wyoming_events(samples: np.ndarray) -> List[Any]:
    from wyoming.asr import Transcribe
    from wyoming.audio import AudioChunk, AudioStart, AudioStop

    pcm = (np.clip(samples, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
    events = [Transcribe(language="en").event(), AudioStart(rate=RATE, width=2, channels=1).event()]
    for offset in range(0, len(pcm), 2048):
        events.append(AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[offset : offset + 2048]).event())
    return events + [AudioStop().event()]


async def load(
    server: Server,
    protocol: str,
    clients: int,
    requests: int,
    clips: List[np.ndarray],
    paired: Optional[Tuple[EdgeTranscriber, List[Path]]] = None,
) -> Dict[str, float]:
    """`requests` requests from `clients` concurrent clients. With `paired` (1 client), each request
    follows a direct `transcribe` of the same clip's file, and the figures get `direct_p50_s` and
    `overhead_p50` (the median of the pairs' ratios, less 1): on a shared machine, load drifts less
    between neighbours than between runs."""
    import aiohttp

    payloads: List[Any] = [wav_bytes(c) if protocol == "http" else wyoming_events(c) for c in clips]
    host, port = server.addresses[protocol]
    url = f"http://{host}:{port}/v1/audio/transcriptions"
    counter = iter(range(requests))
    latencies: List[float] = []
    direct_latencies: List[float] = []

    async def request(session: Any, payload: Any) -> float:
        if protocol == "http":
            return await http_request(session, url, payload)
        return await wyoming_request(host, port, payload)

    async def client(session: Any) -> None:
        for index in counter:
            if paired is not None:
                transcriber, paths = paired
                begin = time.perf_counter()
                transcriber.transcribe(paths[index % len(paths)])
                direct_latencies.append(time.perf_counter() - begin)
            latencies.append(await request(session, payloads[index % len(payloads)]))

    async with aiohttp.ClientSession() as session:
        await request(session, payloads[0])  # warm-up: the first request loads what it loads
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - started
    figures = summary(latencies, wall)
    if direct_latencies:
        figures["requests_per_s"] = len(latencies) / (wall - sum(direct_latencies))
        figures["direct_p50_s"] = statistics.median(direct_latencies)
        ratios = [served / alone for served, alone in zip(latencies, direct_latencies)]
        figures["overhead_p50"] = statistics.median(ratios) - 1
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="bundle folder (default: the bundled model)")
    parser.add_argument("--clients", default="1,2,4", help="concurrent clients, e.g. 1,2,4")
    parser.add_argument("--configs", default="1x2,2x1,2x2", help="server CxT: --max-concurrent C --threads T")
    parser.add_argument("--protocols", default="http,wyoming")
    parser.add_argument("--requests", type=int, default=12, help="requests per measurement (all clients)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    configs = [(int(c), int(t)) for c, t in (spec.split("x") for spec in args.configs.split(","))]
    protocols = args.protocols.split(",")
    clips = make_clips()
    report: Dict[str, Any] = {"cpus": os.cpu_count(), "clips": len(clips), "clip_seconds": CLIP_SECONDS}
    print(
        f"{len(clips)} clips of {CLIP_SECONDS:g} s from edge_asr/samples; {os.cpu_count()} CPUs; "
        f"{args.requests} requests per line; latency from the first byte sent to the answer"
    )
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index, clip in enumerate(clips):
            paths.append(Path(folder) / f"clip{index}.wav")
            paths[-1].write_bytes(wav_bytes(clip))
        transcribers = {t: EdgeTranscriber(args.model, threads=t) for t in sorted({t for _, t in configs})}
        report["direct"] = {}
        for threads, transcriber in transcribers.items():
            figures = direct(transcriber, paths, args.requests)
            report["direct"][threads] = figures
            print(
                f"direct transcribe(), threads {threads}: {figures['requests_per_s']:.2f} req/s, "
                f"p50 {figures['p50_s']:.3f} s, p95 {figures['p95_s']:.3f} s"
            )
        print("\noverhead at 1 client: median of (request / transcribe() of the same clip just before) - 1")
        header = ("server", "protocol", "clients", "req/s", "p50 s", "p95 s", "overhead")
        print("{:<26} {:<8} {:>7} {:>7} {:>7} {:>7} {:>9}".format(*header))
        report["server"] = []
        for concurrent, threads in configs:
            server = Server(args.model, concurrent, threads)
            try:
                for protocol in protocols:
                    for count in clients:
                        paired = (transcribers[threads], paths) if count == 1 else None
                        figures = asyncio.run(load(server, protocol, count, args.requests, clips, paired))
                        row = {"max_concurrent": concurrent, "threads": threads, "protocol": protocol}
                        report["server"].append({**row, "clients": count, **figures})
                        rate, p50, p95 = figures["requests_per_s"], figures["p50_s"], figures["p95_s"]
                        shown = f"{figures['overhead_p50']:+.0%}" if "overhead_p50" in figures else ""
                        print(
                            f"--max-concurrent {concurrent} -t {threads:<4} {protocol:<8} {count:>7} "
                            f"{rate:>7.2f} {p50:>7.3f} {p95:>7.3f} {shown:>9}",
                            flush=True,
                        )
            finally:
                server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
