"""The int8 report: JSON (for machines), Markdown (for people) and a small PNG plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_asr.atomic import write_bytes_atomic, write_text_atomic

from .evaluate import Evaluation

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
MAX_EXAMPLES = 10


def _r(value: Optional[float], digits: int = 4) -> Optional[float]:
    return None if value is None else round(float(value), digits)


def report_data(evaluation: Evaluation, context: Dict[str, Any]) -> Dict[str, Any]:
    """The report as a JSON-ready dict; `context` carries model/export/int8 facts from convert."""
    ev = evaluation
    variants: Dict[str, Any] = {
        "pytorch": {
            "cer": _r(ev.cer["pytorch"]),
            "wer": _r(ev.wer["pytorch"]),
            "rtf": _r(ev.torch.rtf),
            "note": "eager fp32, same process as the exporter; no RSS figure",
        }
    }
    for name, run in ev.runs.items():
        variants[name] = {
            "cer": _r(ev.cer[name]),
            "wer": _r(ev.wer[name]),
            "size_bytes": ev.sizes[name],
            "size_mb": round(ev.sizes[name] / 1e6, 2),
            "identical_to_pytorch": ev.identical_to_pytorch[name],
            **run.summary(),
        }
    for name in ev.runs:
        if name != "fp32":
            variants[name]["cer_increase"] = _r(ev.increase(name))
    cer_increase = ev.cer_increase
    guarded = ev.guarded
    wer_increase = ev.wer[guarded] - ev.wer["fp32"] if guarded in ev.wer and "fp32" in ev.wer else None
    utterances: List[Dict[str, Any]] = []
    for i, item in enumerate(ev.items):
        row = {"path": str(item.path), "reference": item.text, "pytorch": ev.torch.transcripts[i]}
        row.update({name: run.transcripts[i] for name, run in ev.runs.items()})
        utterances.append(row)
    return {
        **context,
        "utterances_count": len(ev.items),
        "audio_seconds": round(ev.torch.audio_seconds, 2),
        "variants": variants,
        "guarded_variant": guarded,
        "cer_increase": _r(cer_increase),
        "wer_increase": _r(wer_increase),
        "token_agreement": {k: _r(v) for k, v in ev.agreement.items()},
        "max_cer_increase": ev.max_cer_increase,
        "guard_passed": ev.guard_passed,
        "int8_recommended": ev.guard_passed,
        "utterances": utterances,
    }


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def report_markdown(data: Dict[str, Any]) -> str:
    variants = data["variants"]
    n = data["utterances_count"]
    lines = [
        f"# int8 report: {data.get('model', {}).get('name', 'model')}",
        "",
        f"Evaluation set: `{data.get('manifest', '?')}`, {n} utterance(s), {data['audio_seconds']} s of "
        "audio. "
        "Bundle variants ran through edge_asr's EdgeTranscriber, each in its own process.",
        "",
        "| variant | CER | WER | RTF | peak RSS (MB) | size (MB) | transcripts = PyTorch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        lines.append(
            f"| {name} | {_pct(v['cer'])} | {_pct(v['wer'])} | {v['rtf']:.4f} | "
            f"{v.get('peak_rss_mb', 'n/a')} | "
            f"{v.get('size_mb', 'n/a')} | {v.get('identical_to_pytorch', n)}/{n} |"
        )
    agreement = data["token_agreement"]
    guarded = data.get("guarded_variant", "int8")
    quantized = [name for name in variants if name not in ("pytorch", "fp32")]
    lines.append("")
    for name in quantized:
        wer = f", WER {_pct(data['wer_increase'])}" if name == guarded else ""
        increase = _pct(variants[name].get("cer_increase"))
        lines.append(f"- {name} - fp32: CER {increase}{wer} (absolute points)")
    lines.append(
        "- greedy-token agreement: "
        + ", ".join(f"{k.replace('_', ' ')} {_pct(v)}" for k, v in agreement.items()),
    )
    for name in quantized:
        if "fp32" in variants and variants[name]["rtf"]:
            lines.append(
                f"- {name} speed-up over fp32: {variants['fp32']['rtf'] / variants[name]['rtf']:.2f}x; size "
                f"{variants[name]['size_bytes'] / variants['fp32']['size_bytes']:.2f}x"
            )
    guard = data["max_cer_increase"]
    if guard is None:
        lines.append("- guard: none set")
    else:
        verdict = "passed" if data["guard_passed"] else "FAILED: int8 is marked not recommended"
        lines.append(f"- guard ({guarded}): CER increase at most {_pct(guard)}: {verdict}")
    recipe = data.get("int8", {}).get("options")
    if recipe:
        lines.append(f"- int8 recipe: {json.dumps(recipe)}")
    conv = data.get("int8", {}).get("conv")
    if conv:
        lines += _conv_lines(conv)
    columns = ["pytorch", *[name for name in variants if name != "pytorch"]]
    lines += [
        "",
        "## Examples",
        "",
        "| reference | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for row in data["utterances"][:MAX_EXAMPLES]:
        cells = [row["reference"], *[row.get(name, "") for name in columns]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", f"![fp32 vs int8]({REPORT_PNG})", ""]
    return "\n".join(lines)


def _conv_lines(conv: Dict[str, Any]) -> List[str]:
    """What static Conv quantization (--int8-conv) did to each Conv node, and why."""
    lines = [
        "",
        "## Static int8 Conv layers (--int8-conv)",
        "",
        f"The bundle's int8 graph ({conv.get('file', '?')}) is int8-conv. Calibrated on "
        f"{conv['calibration_utterances']} utterance(s) of `{conv['options'].get('calibration')}`; probe "
        f"(the first {conv.get('probe_utterances')} of them) CER in float: "
        f"{_pct(conv.get('probe_cer'))}.",
        "",
        "| Conv node | GEMM depth | int8 | probe CER alone | why |",
        "|---|---|---|---|---|",
    ]
    for layer in conv["layers"]:
        lines.append(
            f"| `{layer['name']}` | {layer['depth']} | {'yes' if layer['quantized'] else '**float**'} | "
            f"{_pct(layer.get('cer'))} | {layer['reason']} |"
        )
    return lines


def report_plot(data: Dict[str, Any], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = {k: v for k, v in data["variants"].items() if k != "pytorch"}
    names = list(variants)
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.6))
    panels = [
        ("CER / WER (%)", None),
        ("real-time factor", "rtf"),
        ("peak RSS (MB)", "peak_rss_mb"),
        ("size (MB)", "size_mb"),
    ]
    colors = ["#4878a8", "#e0873b", "#5a9a5a", "#a05a9a"]
    for ax, (title, key) in zip(axes, panels):
        if key is None:
            width = 0.38
            xs = range(len(names))
            ax.bar([x - width / 2 for x in xs], [100 * variants[n]["cer"] for n in names], width, label="CER")
            ax.bar([x + width / 2 for x in xs], [100 * variants[n]["wer"] for n in names], width, label="WER")
            ax.legend(fontsize=7)
        else:
            ax.bar(names, [variants[n][key] for n in names], color=colors[: len(names)])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())


def write_report(folder: Path, data: Dict[str, Any]) -> List[Path]:
    """Write report.json, report.md and report.png into `folder`; returns their paths."""
    json_path = write_text_atomic(folder / REPORT_JSON, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    md_path = write_text_atomic(folder / REPORT_MD, report_markdown(data))
    png_path = folder / REPORT_PNG
    report_plot(data, png_path)
    return [json_path, md_path, png_path]
