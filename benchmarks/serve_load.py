"""`edge-asr serve` under a mixed load: normal requests while every hostile request of issue 29 arrives.

    python benchmarks/serve_load.py [--model BUNDLE] [--seconds 60] [--deadline 5] [--json FILE]

Starts `edge-asr serve` in a child process (Wyoming and HTTP on 127.0.0.1 only, ports the system picks,
the server's default limits except --request-timeout, 10 s here so that the slow clients' requests end
within the run), then for --seconds sends, from this process:

* normal requests, back to back from --normal-clients clients (half HTTP as OpenAI's clients send,
  half Wyoming as Home Assistant does), each a bundled sample (edge_asr/samples/ked-u000022.wav);
* each hostile kind of the issue, from --hostile-clients clients (the kinds dealt out among them, each
  client sending its kinds in turn, one request at a time, --hostile-pause apart):
  the 449-byte and 298-byte rule templates (HTTP and Wyoming), the 1,000,000-phrase template, a
  99,856-phrase template that compiles (new text each time, so never from the cache), an HTTP body at
  100 bytes per 0.2 s, Wyoming audio in 2-byte chunks, malformed multipart bodies, a grammar field of
  300 KB of NUL bytes, a chunked upload of zeros with no length (/dev/zero), a FLAC of open length.

Every loop is bounded (it starts nothing that could not end by --seconds) and so is the concurrency
(one request per client: 6 by default, under the server's 9 requests in progress, --max-concurrent 1 +
--max-queue 8; more clients than that get busy answers by design).

Prints the normal requests sent and answered, their latency (median, p95, max: first byte sent to
answer), how many missed --deadline (no transcript, or later than it), each hostile kind's answers,
and whether the server logged one line per request (its log lines, its own count at exit, and the
requests sent).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_asr.audio import read_audio  # noqa: E402

RATE = 16000
SAMPLE = ROOT / "edge_asr" / "samples" / "ked-u000022.wav"
ENDPOINT = "/v1/audio/transcriptions"
REQUEST_LINE = re.compile(r"^INFO (http|wyoming|wyoming-stream) \S+: [\d.]+ s of audio in ")
STOPPED_LINE = re.compile(r"stopped: (\d+) request\(s\), (\d+) answered, (\d+) failed \((\d+) busy\)")


@dataclass
class Tally:
    """What one kind of request got: how many were sent, their answers, and (normal ones) latencies."""

    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    latencies: List[float] = field(default_factory=list)
    missed: int = 0


@dataclass
class Kind:
    """A kind of request: `send` makes one and returns its answer ("200", "408 timeout", "error
    timeout", ...); `holds` is the longest it may take (nothing is started that could not end in time);
    `logged`: whether the server counts it as a request (one log line)."""

    name: str
    send: Callable[[], Awaitable[str]]
    holds: float
    logged: bool = True


class Server:
    """`edge-asr serve` in a child process on 127.0.0.1, ports chosen by the system; keeps its log."""

    def __init__(self, model: Optional[str], request_timeout: float):
        command = [sys.executable, "-m", "edge_asr", "serve", "--wyoming", "tcp://127.0.0.1:0"]
        command += ["--http", "127.0.0.1:0", "--request-timeout", str(request_timeout)]
        command += ["--model", model] if model else []
        self.command = command
        self.process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.lines: List[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ports: Dict[str, int] = {}
        deadline = time.monotonic() + 120
        while len(self.ports) < 2:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("edge-asr serve did not start:\n" + "".join(self.lines[-20:]))
            try:
                line = self._lines.get(timeout=1)
            except queue.Empty:
                continue
            found = re.search(r"INFO (wyoming|http): serving \S+ on \w+://127\.0\.0\.1:(\d+)", line)
            if found:
                self.ports[found.group(1)] = int(found.group(2))

    def _pump(self) -> None:
        for line in self.process.stderr or []:
            self.lines.append(line)
            self._lines.put(line)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        time.sleep(0.2)  # the pump's last lines
        return code


# -- what the clients send -------------------------------------------------------------------------------


def wav_bytes(samples: np.ndarray) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def open_length_flac(samples: np.ndarray) -> bytes:
    """A FLAC whose STREAMINFO leaves the length open (total samples 0), as streaming encoders write it."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="FLAC")
    data = bytearray(buffer.getvalue())
    fields = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # rate, channels, bits; no total
    data[18:26] = fields.to_bytes(8, "big")
    return bytes(data)


def nested_rules(copies: int, levels: int) -> str:
    """<r0> = (on|off), each <rN> = `copies` x <rN-1>, `turn <rN>`: 2**(copies**levels) phrases."""
    lines = ["<r0> = (on|off)"]
    lines += [f"<r{n}> = " + " ".join([f"<r{n - 1}>"] * copies) for n in range(1, levels + 1)]
    return "\n".join([*lines, f"turn <r{levels}>"]) + "\n"


def million_phrases() -> str:
    """`set {a} {b} {c}`, three lists of 100 values (5.5 KB): 1,000,000 phrases."""
    tens = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    values = [f"{tens[i // 10]} {tens[i % 10]}" for i in range(100)]
    lists = [f"{{{name}}} = " + " | ".join(f"{name} lvl {v}" for v in values) for name in "abc"]
    return "\n".join(["set {a} {b} {c}", *lists]) + "\n"


def multipart(fields: Dict[str, bytes], boundary: str = "B") -> bytes:
    parts = b""
    for name, value in fields.items():
        filename = '; filename="a.wav"' if name == "file" else ""
        parts += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
        parts += value + b"\r\n"
    return parts + f"--{boundary}--\r\n".encode()


def http_head(port: int, content_type: str, length: Optional[int]) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {ENDPOINT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\n{size}\r\n\r\n"
    ).encode()


def http_outcome(answer: bytes) -> str:
    """'200', or the status and OpenAI error code of an answer ('408 timeout'); 'closed' for none."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/1.1 ") else "closed"
    if status == "200":
        return status
    try:
        return f"{status} {json.loads(body)['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return status


async def read_answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    with_timeout = asyncio.wait_for(reader.read(), timeout)
    try:
        return await with_timeout
    except (ConnectionError, asyncio.TimeoutError):
        return b""


class Clients:
    """The requests this benchmark sends, to one server."""

    def __init__(self, ports: Dict[str, int], request_timeout: float):
        self.http_port = ports["http"]
        self.wyoming_port = ports["wyoming"]
        self.request_timeout = request_timeout
        speech = read_audio(SAMPLE, RATE)
        self.wav = wav_bytes(speech)
        self.pcm = (np.clip(speech, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
        self.flac = open_length_flac(speech)
        self.salt = itertools.count()

    async def post(self, body: bytes, content_type: str = "multipart/form-data; boundary=B") -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        try:
            writer.write(http_head(self.http_port, content_type, len(body)) + body)
            await writer.drain()
            return http_outcome(await read_answer(reader, 60))
        finally:
            writer.close()

    async def http_form(self, **fields: bytes) -> str:
        return await self.post(
            multipart({"model": b"whisper-1", **fields, "file": fields.get("file", self.wav)})
        )

    async def wyoming(self, context: Optional[Dict[str, Any]] = None, chunk_bytes: int = 2048) -> str:
        """Transcribe (with `context`), audio-start, the sample in `chunk_bytes` chunks, audio-stop:
        'transcript' or 'error CODE' (or 'closed')."""
        from wyoming.asr import Transcribe
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.client import AsyncTcpClient

        async with AsyncTcpClient("127.0.0.1", self.wyoming_port) as client:
            await client.write_event(Transcribe(language="en", context=context).event())
            await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
            for offset in range(0, len(self.pcm), chunk_bytes):
                chunk = AudioChunk(
                    rate=RATE, width=2, channels=1, audio=self.pcm[offset : offset + chunk_bytes]
                )
                await client.write_event(chunk.event())
            await client.write_event(AudioStop().event())
            return await wyoming_answer(client, 60)

    async def trickle(self) -> str:
        """Wyoming audio in 2-byte chunks, 20 a second: its deadline passes long before audio-stop."""
        from wyoming.audio import AudioChunk, AudioStart
        from wyoming.client import AsyncTcpClient

        async with AsyncTcpClient("127.0.0.1", self.wyoming_port) as client:
            await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
            # One read stays pending across the polls: cancelling a read halfway through an event
            # (a timeout on each poll) would leave the stream mid-event for the next one.
            answer: asyncio.Task[str] = asyncio.ensure_future(wyoming_answer(client, 3600))
            try:
                for _ in range(int(self.request_timeout * 20) + 100):
                    try:
                        await client.write_event(
                            AudioChunk(rate=RATE, width=2, channels=1, audio=b"\0\0").event()
                        )
                    except ConnectionError:
                        return "closed"
                    done, _ = await asyncio.wait({answer}, timeout=0.05)
                    if done:
                        return answer.result()
                return "nothing"
            finally:
                answer.cancel()

    async def slow_body(self) -> str:
        """A whole upload, 100 bytes per 0.2 s (it would take minutes): answered at its deadline."""
        body = multipart({"file": self.wav})
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        answer = asyncio.ensure_future(read_answer(reader, 120))  # read while sending: a 408 comes early
        try:
            writer.write(http_head(self.http_port, "multipart/form-data; boundary=B", len(body)))
            for offset in range(0, len(body), 100):
                if answer.done():
                    break
                writer.write(body[offset : offset + 100])
                await writer.drain()
                await asyncio.wait({answer}, timeout=0.2)
        except ConnectionError:
            pass  # the server answered and closed: the answer is read below
        finally:
            outcome = http_outcome(await answer)
            writer.close()
        return outcome

    async def zeros(self, most: int = 40 * 1000 * 1000) -> str:
        """A chunked upload of NUL bytes with no length (/dev/zero), until the server answers."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.http_port)
        answer = asyncio.ensure_future(read_answer(reader, 60))
        block = b"\0" * 65536
        chunk = f"{len(block):x}\r\n".encode() + block + b"\r\n"
        start = b'--B\r\nContent-Disposition: form-data; name="file"; filename="zero"\r\n\r\n'
        try:
            writer.write(http_head(self.http_port, "multipart/form-data; boundary=B", None))
            writer.write(f"{len(start):x}\r\n".encode() + start + b"\r\n")
            for _ in range(most // len(block)):
                if answer.done():
                    break
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed: the answer is read below
        finally:
            outcome = http_outcome(await answer)
            writer.close()
        return outcome

    async def malformed(self) -> str:
        bodies = [
            ("multipart/form-data", multipart({"file": b"xx"})),  # no boundary
            ("multipart/form-data; boundary=B", multipart({"file": b"xx"})[:-7]),  # no closing boundary
            ("multipart/form-data; boundary=B", b"no boundary anywhere"),
        ]
        content_type, body = bodies[next(self.salt) % len(bodies)]
        return await self.post(body, content_type)

    def near_cap_grammar(self) -> bytes:
        """99,856 phrases ("set 1 to 1" .. "set 316 to 316"), a new text (so never cached) each time."""
        return f"# {next(self.salt)}\nset {{a:1-316}} to {{b:1-316}}\n".encode()


async def wyoming_answer(client: Any, timeout: float) -> str:
    try:
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout)
            if event is None:
                return "closed"
            if event.type == "transcript":
                return "transcript"
            if event.type == "error":
                return f"error {event.data.get('code')}"
    except asyncio.TimeoutError:
        return "nothing"
    except ConnectionError:
        return "closed"


def hostile_kinds(clients: Clients) -> List[Kind]:
    slow = clients.request_timeout + 5
    million = million_phrases().encode()
    return [
        Kind("449-byte template (http)", lambda: clients.http_form(grammar=nested_rules(8, 9).encode()), 5),
        Kind("298-byte template (http)", lambda: clients.http_form(grammar=nested_rules(4, 10).encode()), 5),
        Kind("449-byte template (wyoming)", lambda: clients.wyoming({"grammar": nested_rules(8, 9)}), 5),
        Kind("1,000,000-phrase template (http)", lambda: clients.http_form(grammar=million), 5),
        Kind(
            "99,856-phrase template, new each time (http)",
            lambda: clients.http_form(grammar=clients.near_cap_grammar()),
            slow,
        ),
        Kind("body at 100 B / 0.2 s (http)", clients.slow_body, slow),
        Kind("audio in 2-byte chunks (wyoming)", clients.trickle, slow),
        Kind("malformed multipart (http)", clients.malformed, 5),
        Kind("grammar field of 300 KB of NULs (http)", lambda: clients.http_form(grammar=b"\0" * 300_000), 5),
        Kind("chunked upload of zeros, no length (http)", clients.zeros, 15),
        Kind("FLAC of open length (http)", lambda: clients.http_form(file=clients.flac), 5),
    ]


# -- the load ------------------------------------------------------------------------------------------


async def normal_loop(
    send: Callable[[], Awaitable[str]], ok: str, tally: Tally, end: float, deadline: float
) -> None:
    while time.monotonic() + deadline < end:
        tally.sent += 1
        started = time.perf_counter()
        answer = await send()
        seconds = time.perf_counter() - started
        tally.answers[answer] += 1
        if answer == ok:
            tally.latencies.append(seconds)
        if answer != ok or seconds > deadline:
            tally.missed += 1


async def hostile_loop(kinds: List[Kind], tallies: Dict[str, Tally], end: float, pause: float) -> None:
    """`kinds` in turn, one request at a time, until none fits before `end`."""
    while any(time.monotonic() + kind.holds < end for kind in kinds):
        for kind in kinds:
            if time.monotonic() + kind.holds >= end:
                continue
            tally = tallies[kind.name]
            tally.sent += 1
            try:
                answer = await kind.send()
            except (OSError, asyncio.IncompleteReadError) as exc:
                answer = f"client error {type(exc).__name__}"
            tally.answers[answer] += 1
            await asyncio.sleep(pause)


async def run_load(clients: Clients, args: argparse.Namespace) -> Dict[str, Tally]:
    end = time.monotonic() + args.seconds
    tallies: Dict[str, Tally] = {}
    jobs: List[Awaitable[None]] = []
    for index in range(args.normal_clients):
        name = "normal (http)" if index % 2 == 0 else "normal (wyoming)"
        tally = tallies.setdefault(name, Tally())
        if index % 2 == 0:
            jobs.append(normal_loop(clients.http_form, "200", tally, end, args.deadline))
        else:
            jobs.append(normal_loop(clients.wyoming, "transcript", tally, end, args.deadline))
    kinds = hostile_kinds(clients)
    for kind in kinds:
        tallies[kind.name] = Tally()
    for index in range(args.hostile_clients):  # each kind sent by one client, the kinds dealt out
        jobs.append(hostile_loop(kinds[index :: args.hostile_clients], tallies, end, args.hostile_pause))
    await asyncio.gather(*jobs)
    return tallies


# -- the report ----------------------------------------------------------------------------------------


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def report(
    tallies: Dict[str, Tally], server: Server, exit_code: int, args: argparse.Namespace
) -> Dict[str, Any]:
    normal = [t for name, t in tallies.items() if name.startswith("normal")]
    latencies = [s for t in normal for s in t.latencies]
    figures: Dict[str, Any] = {
        "server": " ".join(
            Path(server.command[0]).name if i == 0 else part for i, part in enumerate(server.command)
        ),
        "seconds": args.seconds,
        "deadline_s": args.deadline,
        "normal_sent": sum(t.sent for t in normal),
        "normal_answered": len(latencies),
        "normal_missed_deadline": sum(t.missed for t in normal),
        "latency_median_s": statistics.median(latencies) if latencies else None,
        "latency_p95_s": percentile(latencies, 0.95) if latencies else None,
        "latency_max_s": max(latencies) if latencies else None,
        "kinds": {name: {"sent": t.sent, "answers": dict(t.answers)} for name, t in tallies.items()},
    }
    logged = sum(1 for line in server.lines if REQUEST_LINE.match(line))
    stopped = [STOPPED_LINE.search(line) for line in server.lines]
    counted = next((int(m.group(1)) for m in stopped if m), None)
    sent = sum(t.sent for t in tallies.values())
    tracebacks = sum(1 for line in server.lines if line.startswith("Traceback"))
    figures.update(
        requests_sent=sent, log_lines=logged, server_count=counted, exit_code=exit_code, tracebacks=tracebacks
    )
    figures["every_request_logged"] = logged == sent == counted
    return figures


def print_figures(figures: Dict[str, Any]) -> None:
    print(f"server: {figures['server']}")
    print(f"{figures['seconds']:g} s of mixed load; a normal request's deadline: {figures['deadline_s']:g} s")
    print(
        f"normal requests: {figures['normal_sent']} sent, {figures['normal_answered']} answered, "
        f"{figures['normal_missed_deadline']} missed the deadline"
    )
    if figures["latency_median_s"] is not None:
        print(
            f"normal latency: median {figures['latency_median_s']:.3f} s, "
            f"p95 {figures['latency_p95_s']:.3f} s, max {figures['latency_max_s']:.3f} s"
        )
    for name, kind in figures["kinds"].items():
        answers = ", ".join(f"{answer} x{count}" for answer, count in sorted(kind["answers"].items()))
        print(f"  {name}: {kind['sent']} sent: {answers}")
    print(
        f"requests sent {figures['requests_sent']}, request log lines {figures['log_lines']}, "
        f"the server's own count {figures['server_count']}: "
        f"every request logged: {figures['every_request_logged']}; "
        f"exit code {figures['exit_code']}, tracebacks in the log {figures['tracebacks']}"
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", help="bundle folder (default: the bundled model)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs (default 60)")
    parser.add_argument(
        "--deadline", type=float, default=5.0, help="a normal request's deadline (default 5 s)"
    )
    parser.add_argument("--normal-clients", type=int, default=2, help="normal clients, half HTTP (default 2)")
    parser.add_argument(
        "--hostile-clients", type=int, default=4, help="hostile clients, the kinds dealt out (default 4)"
    )
    parser.add_argument(
        "--hostile-pause", type=float, default=0.5, help="seconds between a hostile client's requests"
    )
    parser.add_argument("--request-timeout", type=float, default=10.0, help="the server's --request-timeout")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    server = Server(args.model, args.request_timeout)
    try:
        clients = Clients(server.ports, args.request_timeout)
        tallies = asyncio.run(run_load(clients, args))
    finally:
        exit_code = server.stop()
    figures = report(tallies, server, exit_code, args)
    print_figures(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
