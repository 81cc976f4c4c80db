"""`edge-asr bench` on the tone bundle with tiny settings (clips of a second or less)."""

import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tone_model import tone_audio, write_tone_bundle

from edge_asr import EdgeTranscriber, cli, sysinfo
from edge_asr.bench import (
    BenchOptions,
    format_table,
    generated_audio,
    parse_arenas,
    parse_seconds,
    parse_threads,
    run_bench,
)
from edge_asr.errors import BenchError, BundleError, InputError


def test_in_process_times_every_variant_and_clip(tone_bundle):
    report = run_bench(
        BenchOptions(model=str(tone_bundle), seconds=[1.0, 0.5], threads=[1], isolate=False, arenas=["off"])
    )
    assert [(r.variant, r.threads, r.model_file, r.arena) for r in report.results] == [
        ("fp32", 1, "model.onnx", "off"),
        ("int8", 1, "model.int8.onnx", "off"),
    ]
    for result in report.results:
        assert [c.seconds for c in result.clips] == [0.5, 1.0]  # shortest first: RSS peaks in order
        for clip in result.clips:
            assert clip.processing_s > 0 and clip.cpu_s > 0
            assert clip.rtf == pytest.approx(clip.processing_s / clip.seconds, rel=1e-3, abs=1e-5)
            assert clip.peak_rss_mb >= result.rss_after_load_mb >= result.rss_before_load_mb > 0
        assert result.load_s >= 0 and result.model_mb > 0
    data = json.loads(report.to_json())
    assert data["settings"]["isolated"] is False
    assert data["settings"]["seconds"] == [1.0, 0.5]
    assert set(data["machine"]) >= {"platform", "cpu_model", "physical_cores", "onnxruntime", "memory_mb"}
    assert data["results"][1]["clips"][0]["seconds"] == 0.5
    table = format_table(report)
    assert "RTF 1s" in table and "RTF 0.5s" in table and "int8" in table


def test_input_file_is_used_and_transcribed(tone_bundle, tmp_path):
    wav = tmp_path / "abc.wav"
    sf.write(wav, tone_audio("abc"), 16000)
    report = run_bench(
        BenchOptions(
            model=str(tone_bundle),
            input=str(wav),
            seconds=[],
            threads=[1],
            variants=("fp32",),
            isolate=False,
            arenas=["auto"],
        )
    )
    (result,) = report.results
    assert result.text == "abc"  # the whole file, once: proves the file (not noise) was timed
    assert result.clips[0].seconds == pytest.approx(sf.info(str(wav)).duration, abs=1e-3)


def test_each_configuration_in_its_own_child_process(tone_bundle):
    report = run_bench(
        BenchOptions(model=str(tone_bundle), seconds=[0.5], threads=[1, 2], variants=("int8",))
    )
    assert report.settings["isolated"] is True
    # the arena on and off by default, each its own configuration (RSS needs a process per setting)
    assert [(r.threads, r.arena) for r in report.results] == [(1, "on"), (1, "off"), (2, "on"), (2, "off")]
    assert all(r.clips[0].rtf > 0 for r in report.results)
    assert "arena" in format_table(report) and report.settings["arenas"] == ["on", "off"]


def test_arena_setting_reaches_the_session(tone_bundle, monkeypatch):
    import edge_asr.model as model

    for choice, expected in (("on", 1), ("off", 0)):
        asr = EdgeTranscriber(tone_bundle, arena=choice)
        assert asr.model.arena is (expected == 1)
        options = asr.model.session.get_session_options()
        assert options.enable_cpu_mem_arena is (expected == 1)
    # auto: by the size of the graphs and the machine's memory, against the measured thresholds
    assert not EdgeTranscriber(tone_bundle, arena="auto").model.arena  # a tiny graph: off
    monkeypatch.setattr(model, "ARENA_MIN_MODEL_BYTES", 1)
    monkeypatch.setattr(model, "ARENA_MIN_MEMORY_MB", 1)
    assert EdgeTranscriber(tone_bundle, arena="auto").model.arena
    graph = [tone_bundle / "model.onnx"]
    assert model.resolve_arena("auto", graph, memory_mb=1) and not model.resolve_arena("auto", graph, 0)
    with pytest.raises(InputError, match="arena must be one of"):
        EdgeTranscriber(tone_bundle, arena="sometimes")
    args = cli.parse_args(["file", "x.wav", "--arena", "on", "--front-end-cache", "off"])
    assert (args.arena, args.front_end_cache) == ("on", "off")
    assert parse_arenas("off, on,off") == ["off", "on"]
    with pytest.raises(InputError, match="--arena 'big'"):
        parse_arenas("big")


def test_cli_quick_writes_table_and_json(capsys, tone_bundle, tmp_path):
    out = tmp_path / "results" / "bench.json"
    code = cli.main(["bench", "--model", str(tone_bundle), "--quick", "--threads", "1", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "RTF 5s" in printed.out and str(out) in printed.out
    assert "int8, 1 thread(s)" in printed.err
    data = json.loads(out.read_text())
    # --quick: one 5 s clip with the graph `edge-asr file` would pick (int8 when present).
    assert [(r["variant"], [c["seconds"] for c in r["clips"]]) for r in data["results"]] == [("int8", [5.0])]
    assert data["settings"]["isolated"] is False


def test_generated_audio_is_reproducible_and_exact_length():
    a, b = generated_audio(1.25, 16000), generated_audio(1.25, 16000)
    assert a.dtype == np.float32 and a.size == 20000
    assert np.array_equal(a, b)
    assert 0.01 < float(np.abs(a).mean()) < 1.0


def test_list_parsers():
    assert parse_seconds("5, 10,30") == [5.0, 10.0, 30.0]
    assert parse_threads("1,2,4") == [1, 2, 4]
    for bad in ("", "a,b", "0", "-5"):
        with pytest.raises(InputError):
            parse_seconds(bad)
    for bad in ("", "1.5", "0"):
        with pytest.raises(InputError):
            parse_threads(bad)


def test_bad_arguments_are_rejected(capsys, tone_bundle, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(["bench", "--seconds", "five"])
    assert exc.value.code == 2
    assert "--seconds 'five'" in capsys.readouterr().err
    assert cli.main(["bench", "--model", str(tmp_path / "nowhere"), "--in-process"]) == cli.EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err
    fp32_only = write_tone_bundle(tmp_path / "fp32only")
    assert cli.main(["bench", "-m", str(fp32_only), "--variant", "int8", "--in-process"]) == cli.EXIT_ERROR
    assert "has no int8 model" in capsys.readouterr().err
    with pytest.raises(BundleError):
        run_bench(BenchOptions(model=str(tmp_path / "nowhere")))


def test_json_that_cannot_be_written_fails_before_measuring(capsys, tone_bundle, tmp_path, monkeypatch):
    import edge_asr.bench as bench

    def measured(*args, **kwargs):
        raise AssertionError("measured before checking --json")

    monkeypatch.setattr(bench, "run_configuration", measured)
    blocker = tmp_path / "taken.txt"
    blocker.write_text("")
    for target, message in (
        (blocker / "bench.json", "cannot write there"),
        (tmp_path, "is a folder; give a file name"),
    ):
        args = ["bench", "-m", str(tone_bundle), "--quick", "--in-process", "--json", str(target)]
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"edge-asr: error: --json {target}") and message in err, err


def test_report_that_cannot_be_written_after_measuring_is_a_bench_error(
    capsys, tone_bundle, tmp_path, monkeypatch
):
    import edge_asr.bench as bench

    def disk_full(report, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bench, "write_report", disk_full)
    target = tmp_path / "bench.json"
    args = ["bench", "-m", str(tone_bundle), "--quick", "--in-process", "--seconds", "0.5"]
    args += ["--json", str(target)]
    assert cli.main(args) == cli.EXIT_ERROR
    printed = capsys.readouterr()
    assert "RTF 0.5s" in printed.out  # the figures were shown before the write failed
    message = f"edge-asr: error: --json {target}: cannot write the report (No space left on device)"
    assert message in printed.err


def test_a_killed_child_is_a_bench_error_that_names_the_oom_killer(tone_bundle):
    from edge_asr.bench import _in_child

    outcome = {}

    def run() -> None:
        try:
            outcome["result"] = _in_child((str(tone_bundle), "fp32", 1, [600.0], None, 1, True))
        except Exception as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    before = {p.pid for p in multiprocessing.active_children()}
    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and worker.is_alive():
        children = [p for p in multiprocessing.active_children() if p.pid not in before]
        if children:
            os.kill(children[0].pid, signal.SIGKILL)  # as the OOM killer does
            break
        time.sleep(0.005)
    worker.join(60)
    assert isinstance(outcome.get("error"), BenchError), outcome
    assert "fp32 model with 1 thread(s) was killed" in str(outcome["error"])
    assert "dmesg" in str(outcome["error"])


_PEAK_PROBE = """
import json, sys
import numpy as np
from edge_asr.sysinfo import peak_rss_kib
before = peak_rss_kib()
block = np.ones(int(sys.argv[1]) * 1024 * 1024 // 8)  # touched: resident, not just reserved
print(json.dumps({"before": before, "after": peak_rss_kib()}))
"""


def _peak_in_child(mib: int, parent_mib: int = 0) -> dict:
    """A fresh interpreter allocates `mib` MiB and reports its peak before and after; with `parent_mib`,
    it is started by a process that first grew to that size (the exec case peak_rss_kib guards)."""
    root = str(Path(__file__).resolve().parents[1])
    probe = [sys.executable, "-c", _PEAK_PROBE, str(mib)]
    if parent_mib:
        parent = (
            "import subprocess, sys\n"
            "import numpy as np\n"
            f"held = np.ones({parent_mib} * 1024 * 1024 // 8)\n"
            f"sys.exit(subprocess.run({probe!r}).returncode)\n"
        )
        probe = [sys.executable, "-c", parent]
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(probe, capture_output=True, text=True, check=True, env=env, timeout=120)
    return json.loads(done.stdout)


def test_peak_rss_grows_with_an_allocation_and_is_the_processs_own():
    grown = _peak_in_child(96)
    assert grown["before"] > 1000  # an interpreter with numpy is megabytes, not bytes or gigabytes
    assert grown["after"] - grown["before"] >= 0.9 * 96 * 1024
    if sys.platform.startswith("linux"):
        # Started by a process that grew to 400 MiB: its own peak, not the one inherited through exec.
        small = _peak_in_child(8, parent_mib=400)
        assert small["after"] < 300 * 1024, small
    assert sysinfo.peak_rss_mb() == pytest.approx(sysinfo.peak_rss_kib() * 1.024 / 1000, rel=0.01)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_machine_probes_give_sane_values_on_linux():
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    assert sysinfo.memory_mb() == pytest.approx(total_mib, rel=0.05)
    model = sysinfo.cpu_model()
    assert isinstance(model, str) and model.strip() == model and model
    load = sysinfo.load_average()
    assert load is not None and load >= 0
    board = sysinfo.board_name()
    assert board is None or (board and "\x00" not in board)
    info = sysinfo.machine_info()
    assert info["memory_mb"] == sysinfo.memory_mb() and info["cpu_model"] == model
    assert 1 <= info["physical_cores"] <= info["logical_cores"]
