"""The embedded default corpus: synthetic acted-emotion utterances, made deterministically.

Tests and the demo use it in place of a real corpus. Each utterance is a string
of consonant-vowel syllables from one of a few synthetic speakers (base f0 and
vocal-tract length differ), spoken with the prosody rules of emotional speech
synthesis (Murray & Arnott 1993; Schroeder 2001): pitch level and range,
speaking rate, intensity, spectral tilt, jitter and breathiness. Speaker
differences and per-utterance variation make the cues overlap, and a random
recording gain makes loudness a weak cue, so the classes are learnable but not
separable by one threshold.

Synthesis is source-filter: a Rosenberg glottal pulse train with jitter and
shimmer plus pulsed aspiration noise, filtered frame by frame in the frequency
domain (formant resonances and tilt), plus frication noise with its own
spectral shapes, overlap-added. Everything is vectorised numpy.

Layout: ``out_dir/<label>/<speaker>_<label>_<NNN>.wav`` (16 kHz mono PCM_16),
``out_dir/metadata.tsv`` and ``out_dir/synthetic.json`` (the parameters; marked
complete when the last file is written, so a rerun with the same parameters is
skipped). metadata.tsv has a header line and the columns: file (relative to
out_dir), speaker, sex (m/f), label, seconds, mean_f0 (Hz, over voiced
samples), f0_range_st (standard deviation of f0 in semitones), rate (planned
syllables per second), intensity_db (speaker and emotion level), tilt_db_oct
(spectral tilt added to the voice, dB/octave), jitter (relative period
deviation), shimmer (log-amplitude deviation per pulse), breathiness
(aspiration noise level), gain_db (the random recording gain) and
formant_scale (the speaker's vocal-tract factor).
"""

import json
import logging
import os
from typing import Dict, List, Sequence

import numpy as np

from ..errors import DataError
from ..fileio import atomic_open, atomic_path
from .audio import SAMPLE_RATE
from .corpora.vocabulary import ANG, HAP, NEU, SAD

logger = logging.getLogger(__name__)

# Bump when the synthesis changes: a stored corpus made by another version then
# no longer counts as "generated with the same parameters".
GENERATOR_VERSION = 2
DEFAULT_CLASSES = (NEU, HAP, ANG, SAD)
PARAMS_FILE = "synthetic.json"
METADATA_FILE = "metadata.tsv"
COLUMNS = ("file", "speaker", "sex", "label", "seconds", "mean_f0", "f0_range_st", "rate",
           "intensity_db", "tilt_db_oct", "jitter", "shimmer", "breathiness", "gain_db",
           "formant_scale")

# Deviations from neutral speech, after Murray & Arnott's table and Schroeder's
# rules. level: f0 shift (semitones); range: factor on f0 excursions; rate:
# factor on syllables per second; db: intensity; tilt: spectral slope change in
# dB/octave (positive = tenser, brighter); jitter, breath: factors; oq: glottal
# open quotient (low = pressed voice); rise: probability of a rising
# phrase-final contour; pause: factor on pause length; tremor: f0 tremor (st).
_RULES = ("level", "range", "rate", "db", "tilt", "jitter", "breath", "oq", "rise", "pause", "tremor")
EMOTIONS = {name: dict(zip(_RULES, values)) for name, values in {
    #       level  range  rate   db     tilt   jitter breath oq     rise   pause  tremor
    "neu": (0.00,  1.00,  1.00,  0.00,  0.00,  1.00,  1.00,  0.60,  0.15,  1.00,  0.00),
    "hap": (3.50,  1.90,  1.10,  3.00,  1.50,  1.00,  1.00,  0.55,  0.60,  0.90,  0.00),
    "ang": (2.50,  1.50,  1.25,  6.00,  5.00,  1.30,  0.60,  0.42,  0.10,  0.80,  0.00),
    "sad": (-1.50, 0.50,  0.75,  -4.00, -4.00, 1.40,  1.80,  0.72,  0.05,  1.60,  0.00),
    "fea": (5.00,  1.30,  1.25,  1.00,  1.00,  2.00,  1.40,  0.60,  0.50,  1.20,  0.50),
    "bor": (-2.00, 0.45,  0.85,  -2.00, -2.00, 1.10,  1.20,  0.66,  0.05,  1.30,  0.00),
    "dis": (-3.00, 1.10,  0.75,  -1.00, -1.00, 1.60,  1.00,  0.58,  0.00,  1.40,  0.00),
}.items()}
ALL_CLASSES = tuple(EMOTIONS)

# Peterson & Barney (1952) adult male F1-F3 (Hz); speakers scale them.
VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240),
          "e": (530, 1840, 2480), "o": (570, 840, 2410)}
# Voiced consonants: (relative amplitude, F1-F3, bandwidth factor).
SONORANTS = {"m": (0.5, (250, 1100, 2300), 2.0), "n": (0.5, (250, 1600, 2600), 2.0),
             "l": (0.6, (360, 1300, 2700), 1.3)}
# Noise spectra of fricatives and stop bursts: (centre Hz, bandwidth Hz, gain); centre 0 = flat.
NOISES = {"s": (5500, 2500, 1.0), "S": (3000, 1800, 0.9), "f": (0, 0, 0.35),
          "p": (1200, 2500, 0.6), "t": (4500, 3000, 0.8), "k": (2200, 1200, 0.8)}
NOISE_NAMES = tuple(NOISES)
CONSONANTS = ("p", "t", "k", "s", "S", "f", "m", "n", "l")
REF_RATE = 4.5  # syllables per second of the unscaled durations below
WIN, HOP, NFFT = 512, 256, 1024  # NFFT > WIN leaves room for the resonances' ringing


def _ms(rng, lo, hi, scale=1.0):
    return max(1, int(rng.uniform(lo, hi) * scale * SAMPLE_RATE / 1000))


def make_speaker(seed: int, index: int) -> Dict:
    """Speaker ``index`` (0-based): male-ish or female-ish voice in Thue-Morse order (m f f m f m m f ...).

    In that order every round-robin split of the speakers into 2 or 4 folds
    (``prepare folder``'s) holds both sexes: with plain alternation a 2-fold
    split would train on one sex and test on the other, and pitch level alone
    would then mislead any classifier.
    """
    rng = np.random.default_rng([seed, 0, index])
    male = bin(index).count("1") % 2 == 0
    return dict(
        id=f"spk{index + 1:02d}", sex="m" if male else "f",
        f0=rng.uniform(95, 130) if male else rng.uniform(180, 240),
        # a shorter vocal tract raises every formant by the same factor
        scale=rng.uniform(0.85, 1.0) if male else rng.uniform(1.05, 1.2),
        rate=rng.uniform(3.9, 5.0), range_st=rng.uniform(2.5, 3.5), tilt=rng.normal(0, 1.0),
        jitter=rng.uniform(0.005, 0.011), shimmer=rng.uniform(0.04, 0.08),
        breath=rng.uniform(0.03, 0.05) * (1.0 if male else 1.5), db=rng.normal(0, 2),
        # some actors exaggerate more than others
        expressive=rng.uniform(0.8, 1.2),
    )


def _prosody(rng, spk, label):
    e, x = EMOTIONS[label], spk["expressive"]
    return dict(
        f0=spk["f0"] * 2 ** ((x * e["level"] + rng.normal(0, 1.5)) / 12),
        range_st=spk["range_st"] * e["range"] ** x * np.exp(rng.normal(0, 0.15)),
        rate=spk["rate"] * e["rate"] ** x * np.exp(rng.normal(0, 0.08)),
        db=spk["db"] + x * e["db"] + rng.normal(0, 2),
        tilt=spk["tilt"] + x * e["tilt"] + rng.normal(0, 1.0),
        jitter=spk["jitter"] * e["jitter"] ** x * np.exp(rng.normal(0, 0.25)),
        shimmer=spk["shimmer"] * e["jitter"] ** x * np.exp(rng.normal(0, 0.25)),
        breath=spk["breath"] * e["breath"] ** x * np.exp(rng.normal(0, 0.3)),
        oq=float(np.clip(e["oq"] + rng.normal(0, 0.04), 0.35, 0.85)),
        # the recording level, independent of the emotion
        gain_db=float(np.clip(rng.normal(0, 5), -12, 12)),
    )


def _syllable(rng, s, stressed, final):
    """[(phone, vowel, samples)] of one syllable; ``s`` stretches durations (slow speech)."""
    v = "aiueo"[rng.integers(5)]
    out = []
    if rng.random() < 0.8:
        c = CONSONANTS[rng.integers(len(CONSONANTS))]
        # consonants stretch less than vowels when speech slows down
        if c in "ptk":
            out += [("cl", v, _ms(rng, 40, 70, s ** 0.5)), ("b" + c, v, _ms(rng, 10, 15)),
                    ("h", v, _ms(rng, 15, 35))]
        else:
            out.append((c, v, _ms(rng, 80, 120, s ** 0.6) if c in NOISES else _ms(rng, 50, 80, s ** 0.6)))
    out.append((v, v, _ms(rng, 110, 170, s * (1.3 if stressed else 1.0) * (1.3 if final else 1.0))))
    return out


def _plan(rng, n, rate, pause_factor):
    """Phrases of syllables filling ``n`` samples; returns segments, syllables and phrases."""
    s = REF_RATE / rate
    pos = _ms(rng, 40, 120)
    end = n - _ms(rng, 40, 120)
    segs, sylls, phrases = [("_", None, pos)], [], []
    while True:
        size = int(rng.integers(2, 7))
        stress = rng.random(size) < 0.35
        stress[rng.integers(size)] = True
        placed, start = 0, pos
        for i in range(size):
            syl = _syllable(rng, s, stress[i], i == size - 1)
            if pos + sum(d for _, _, d in syl) > end:
                break
            for phone, v, d in syl:
                if phone == v:
                    sylls.append([pos, pos + d, bool(stress[i]), False])
                segs.append((phone, v, d))
                pos += d
            placed += 1
        if placed:
            sylls[-1][3] = True
            phrases.append((start, pos))
        if placed < size:
            break
        pause = int(rng.uniform(0.12, 0.3) * s * pause_factor * SAMPLE_RATE)
        if pos + pause + int(0.15 * SAMPLE_RATE) > end:
            break
        segs.append(("_", None, pause))
        pos += pause
    if not sylls:  # too short for a whole syllable: one sustained vowel
        segs.append(("a", "a", end - pos))
        sylls.append([pos, end, True, True])
        phrases.append((pos, end))
        pos = end
    segs.append(("_", None, n - pos))
    # pauses take the next vowel's formants (the last pause the previous one's), so
    # the formant tracks glide into each vowel instead of from a made-up target
    vowels = [v for _, v, _ in segs]
    nxt = None
    for i in reversed(range(len(vowels))):
        nxt = vowels[i] = vowels[i] or nxt
    last = next((v for v in reversed(vowels) if v), "a")
    vowels = [v or last for v in vowels]
    return [(p, v, d) for (p, _, d), v in zip(segs, vowels)], sylls, phrases


def _segment_tracks(segs, sylls):
    """Per-segment arrays: lengths, voice, aspiration, frication, noise type, formants, bandwidth."""
    stressed = {a for a, _, st, _ in sylls if st}
    rows, pos = [], 0
    for phone, v, d in segs:
        voice, asp, fric, ntype, form, bw = 0.0, 0.0, 0.0, 0, VOWELS[v], 1.0
        if phone in VOWELS:
            voice = 1.0 if pos in stressed else 0.7
        elif phone in SONORANTS:
            voice, form, bw = SONORANTS[phone]
        elif phone in NOISES or phone[0] == "b":
            fric, ntype = 1.0, NOISE_NAMES.index(phone[-1])
        elif phone == "h":
            asp = 1.0
        rows.append((d, voice, asp, fric, ntype, *form, bw, float(pos in stressed)))
        pos += d
    t = np.array(rows, dtype=np.float64)
    lengths, ntype = t[:, 0].astype(np.int64), t[:, 4].astype(np.int64)
    return lengths, t[:, 1], t[:, 2], t[:, 3], ntype, t[:, 5:8], t[:, 8], t[:, 9]


def _f0_contour(rng, sylls, phrases, p, e, n):
    """f0 in Hz per sample: declination, pitch accents, final fall or rise, drift, tremor."""
    st, r = np.zeros(n), p["range_st"]
    for a, b in phrases:
        decl = 0.3 * r + 0.5
        st[a:b] += decl / 2 - decl * np.arange(b - a) / (b - a)
    for a, b, stressed, final in sylls:
        if stressed:
            c, half = (a + b) / 2, 0.8 * (b - a)
            lo, hi = max(0, int(c - half)), min(n, int(c + half))
            st[lo:hi] += r * rng.uniform(0.6, 1.0) * 0.5 * (1 + np.cos(np.pi * (np.arange(lo, hi) - c) / half))
        if final:
            st[a:b] += (0.8 if rng.random() < e["rise"] else -0.6) * r * np.linspace(0, 1, b - a)
    t = np.arange(n) / SAMPLE_RATE
    knots = np.arange(0, t[-1] + 0.2, 0.1)
    st += np.interp(t, knots, rng.normal(0, 0.35, knots.size))
    st += e["tremor"] * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
    return np.clip(p["f0"] * 2 ** (st / 12), 50, 500)


def _glottal_flow(rng, f0, jitter, shimmer, oq):
    """Rosenberg glottal flow pulses following ``f0``, with period jitter and amplitude shimmer."""
    n = f0.size
    phase = np.cumsum(f0) / SAMPLE_RATE
    t = np.interp(np.arange(1, int(phase[-1]) + 1), phase, np.arange(n, dtype=np.float64))
    if t.size < 2:
        return np.zeros(n)
    periods = np.diff(t) * np.clip(1 + jitter * rng.standard_normal(t.size - 1), 0.7, 1.3)
    t = t[0] + np.concatenate([[0.0], np.cumsum(periods)])
    amp = np.exp(shimmer * rng.standard_normal(periods.size))
    samples = np.arange(n)
    k = np.searchsorted(t, samples, side="right") - 1
    inside = (k >= 0) & (k < periods.size)
    k = np.clip(k, 0, periods.size - 1)
    x = (samples - t[k]) / periods[k]
    tp, tn = 0.7 * oq, 0.3 * oq  # opening and closing phases, as fractions of the period
    flow = np.where(x < tp, 0.5 * (1 - np.cos(np.pi * np.minimum(x, tp) / tp)),
                    np.where(x < tp + tn, np.cos(np.pi * np.clip(x - tp, 0, tn) / (2 * tn)), 0.0))
    return np.where(inside, flow * amp[k], 0.0)


def _frames(ms):
    return max(1, round(ms * SAMPLE_RATE / 1000 / HOP))


def _box(x, w):
    """Moving average of width ``w`` along axis 0, same length (edges held)."""
    if w <= 1:
        return x
    pad = [(w // 2, w - 1 - w // 2)] + [(0, 0)] * (x.ndim - 1)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=0)
    c = np.concatenate([np.zeros((1,) + x.shape[1:]), c])
    return (c[w:] - c[:-w]) / w


def _all_pole(freqs, bandwidths):
    """Frequency response (frames, NFFT/2+1) of cascaded two-pole resonators, unit gain at 0 Hz.

    The product of the sections' denominators is one polynomial per frame,
    evaluated at every bin by a single FFT: much cheaper than bin-wise complex
    arithmetic per formant.
    """
    r = np.exp(-np.pi * bandwidths / SAMPLE_RATE)
    c, r2 = -2 * r * np.cos(2 * np.pi * freqs / SAMPLE_RATE), r * r
    poly = np.zeros((freqs.shape[0], 2 * freqs.shape[1] + 1))
    poly[:, 0] = 1.0
    for i in range(freqs.shape[1]):
        prev = poly.copy()
        poly[:, 1:] += c[:, i:i + 1] * prev[:, :-1]
        poly[:, 2:] += r2[:, i:i + 1] * prev[:, :-2]
    return poly.sum(axis=1, keepdims=True) / np.fft.rfft(poly, NFFT)


def _noise_shapes(freqs, scale):
    """Magnitude spectra (noise type, bin) of fricatives and bursts for a vocal tract ``scale``."""
    highpass = freqs ** 2 / (freqs ** 2 + 800.0 ** 2)
    shapes = []
    for centre, width, gain in NOISES.values():
        peak = 1.0 if centre == 0 else 1 / np.sqrt(1 + ((freqs - centre * scale) / (width * scale / 2)) ** 2)
        shapes.append(gain * peak * highpass)
    return np.array(shapes)


def synthesize(rng, speaker: Dict, label: str, seconds: float):
    """One utterance as float samples in [-1, 1] and its prosody parameters."""
    n = int(round(seconds * SAMPLE_RATE))
    e = EMOTIONS[label]
    p = _prosody(rng, speaker, label)
    segs, sylls, phrases = _plan(rng, n, p["rate"], e["pause"])
    lengths, voice, asp, fric, ntype, form, bw, stress = _segment_tracks(segs, sylls)
    f0 = _f0_contour(rng, sylls, phrases, p, e, n)

    def per_sample(values):  # two 5 ms boxes: ramps without clicks
        return _box(_box(np.repeat(values, lengths), 80), 80)

    voice_s, asp_s, fric_s = per_sample(voice), per_sample(asp), per_sample(fric)
    voiced = voice_s > 0.5
    if not voiced.any():
        voiced[:] = True
    flow = _glottal_flow(rng, f0, p["jitter"], p["shimmer"], p["oq"])
    exc = np.diff(flow, prepend=0.0)
    exc /= max(float(np.sqrt(np.mean(exc[voiced] ** 2))), 1e-9)
    noise = rng.standard_normal(n)
    # aspiration noise is modulated by the glottal opening, as in breathy voice
    tract_src = (exc + p["breath"] * (0.3 + flow) * noise) * voice_s + 0.2 * noise * asp_s
    fric_src = 0.5 * rng.standard_normal(n) * fric_s

    # Frame-level spectral envelopes; smoothing the per-segment targets over
    # frames gives the formant transitions between consonants and vowels.
    frames = (n + WIN) // HOP + 1
    centres = np.clip(np.arange(frames) * HOP - WIN // 2, 0, n - 1)
    seg = np.minimum(np.searchsorted(np.cumsum(lengths), centres, side="right"), len(lengths) - 1)
    scale = speaker["scale"]
    formants = np.exp(_box(_box(np.log(form[seg]), _frames(25)), _frames(25))) * scale
    formants = np.concatenate([formants, np.tile([3500 * scale, 4500 * scale], (frames, 1))], axis=1)
    bands = np.array([60.0, 90, 120, 180, 250]) * _box(bw[seg], _frames(25))[:, None]
    bands[:, 0] *= 1 + 5 * p["breath"]  # glottal losses widen F1 in breathy voice
    tilt = p["tilt"] + 1.5 * _box(stress[seg], _frames(40))  # stressed vowels are tenser
    freqs = np.fft.rfftfreq(NFFT, 1 / SAMPLE_RATE)
    h_tract = _all_pole(formants, bands)
    h_tract *= 10 ** (tilt[:, None] * np.log2(np.sqrt(freqs ** 2 + 300.0 ** 2) / 1000) / 20)
    h_fric = _box(np.eye(len(NOISES))[ntype[seg]], _frames(16)) @ _noise_shapes(freqs, scale)

    window = np.hanning(WIN + 1)[:-1]

    def spectra(x):
        padded = np.concatenate([np.zeros(WIN), x, np.zeros(WIN)])
        return np.fft.rfft(np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP] * window, NFFT)

    y = np.fft.irfft(spectra(tract_src) * h_tract + spectra(fric_src) * h_fric, NFFT)
    out = np.zeros((frames + NFFT // HOP, HOP))
    y = y.reshape(frames, NFFT // HOP, HOP)
    for j in range(NFFT // HOP):  # overlap-add, one block offset at a time
        out[j:j + frames] += y[:, j]
    wav = out.reshape(-1)[WIN:WIN + n] / (WIN / (2 * HOP))

    # level: speaker and emotion intensity plus the random recording gain
    target = 10 ** ((-32 + p["db"] + p["gain_db"]) / 20)
    wav *= target / max(float(np.sqrt(np.mean(wav[voiced] ** 2))), 1e-12)
    wav += rng.standard_normal(n) * target * 10 ** (-rng.uniform(35, 50) / 20)
    fade = min(80, n // 4)
    wav[:fade] *= np.linspace(0, 1, fade)
    wav[n - fade:] *= np.linspace(1, 0, fade)
    peak = float(np.max(np.abs(wav)))
    if peak > 0.89:  # keep headroom rather than clip the loudest utterances
        wav *= 0.89 / peak
    info = dict(mean_f0=float(np.mean(f0[voiced])),
                f0_range_st=float(np.std(12 * np.log2(f0[voiced]))), rate=p["rate"],
                intensity_db=p["db"], tilt_db_oct=p["tilt"], jitter=p["jitter"], shimmer=p["shimmer"],
                breathiness=p["breath"], gain_db=p["gain_db"], formant_scale=scale)
    return wav, info


def _check_args(out_dir, num_speakers, utterances_per_class, classes, seed, min_seconds, max_seconds):
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    classes = tuple(classes)
    unknown = [c for c in classes if c not in EMOTIONS]
    if unknown:
        raise DataError(f"{out_dir}: unknown emotion class(es) {unknown}; known: {list(ALL_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise DataError(f"{out_dir}: emotion classes {list(classes)} repeat a name")
    if len(classes) < 2:
        raise DataError(f"{out_dir}: need at least 2 emotion classes, got {list(classes)}")
    if not is_int(num_speakers) or num_speakers < 2:
        raise DataError(f"{out_dir}: num_speakers must be an integer >= 2, got {num_speakers!r}")
    if not is_int(utterances_per_class) or utterances_per_class < 1:
        raise DataError(f"{out_dir}: utterances_per_class must be an integer >= 1, got {utterances_per_class!r}")
    if not is_int(seed) or seed < 0:
        raise DataError(f"{out_dir}: seed must be a non-negative integer, got {seed!r}")
    # below half a second an utterance holds less than one syllable
    if not 0.5 <= min_seconds <= max_seconds <= 60:
        raise DataError(f"{out_dir}: need 0.5 <= min_seconds <= max_seconds <= 60, "
                        f"got min_seconds={min_seconds!r}, max_seconds={max_seconds!r}")
    return classes


def _stored_state(out_dir, params):
    """'empty', 'partial' (same parameters, interrupted) or 'complete'; DataError if foreign."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"{out_dir}: exists and is not a folder")
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return "empty"
    params_path = os.path.join(out_dir, PARAMS_FILE)
    hint = "choose an empty folder or delete this one"
    try:
        with open(params_path, encoding="utf-8") as f:
            stored = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{out_dir}: folder is not empty and holds no {PARAMS_FILE}; {hint}")
    except (OSError, ValueError) as e:
        raise DataError(f"{params_path}: cannot read ({e}); {hint}")
    old = stored.get("parameters") if isinstance(stored, dict) else None
    if old != params:
        differ = sorted(k for k in set(params) | set(old or {}) if (old or {}).get(k) != params.get(k))
        raise DataError(f"{out_dir}: holds a synthetic corpus generated with other parameters "
                        f"(differing: {', '.join(differ)}); {hint}")
    if not stored.get("complete") or not os.path.isfile(os.path.join(out_dir, METADATA_FILE)):
        return "partial"
    if not all(os.path.isfile(r["path"]) for r in read_metadata(out_dir)):
        return "partial"
    return "complete"


def _write_params(out_dir, params, complete, count=0):
    with atomic_open(os.path.join(out_dir, PARAMS_FILE), "w", encoding="utf-8") as f:
        json.dump({"parameters": params, "complete": complete, "utterances": count}, f, indent=2)
        f.write("\n")


def read_metadata(out_dir: str) -> List[Dict]:
    """Rows of ``out_dir/metadata.tsv`` as dicts (numbers as floats), plus the absolute ``path``."""
    path = os.path.join(out_dir, METADATA_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read metadata ({e})")
    if not lines or tuple(lines[0].split("\t")) != COLUMNS:
        raise DataError(f"{path}: header is not {COLUMNS}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        values = line.split("\t")
        if len(values) != len(COLUMNS):
            raise DataError(f"{path}:{number}: {len(values)} columns, expected {len(COLUMNS)}")
        row = {k: (v if k in ("file", "speaker", "sex", "label") else float(v)) for k, v in zip(COLUMNS, values)}
        row["path"] = os.path.abspath(os.path.join(out_dir, row["file"]))
        rows.append(row)
    return rows


def generate_corpus(out_dir: str, num_speakers: int = 6, utterances_per_class: int = 12,
                    classes: Sequence[str] = DEFAULT_CLASSES, seed: int = 0, min_seconds: float = 1.0,
                    max_seconds: float = 3.0, progress: bool = True) -> List[Dict]:
    """Write the synthetic corpus into ``out_dir`` and return its metadata rows.

    ``utterances_per_class`` utterances per speaker and class. Each utterance
    depends only on (seed, speaker, class, index), so a corpus with more
    classes or speakers contains the smaller one's files unchanged. A folder
    that already holds this corpus (same parameters) is left as it is.
    """
    import soundfile as sf
    from tqdm import tqdm

    out_dir = os.fspath(out_dir)
    classes = _check_args(out_dir, num_speakers, utterances_per_class, classes, seed, min_seconds, max_seconds)
    params = dict(generator_version=GENERATOR_VERSION, sample_rate=SAMPLE_RATE, num_speakers=int(num_speakers),
                  utterances_per_class=int(utterances_per_class), classes=list(classes), seed=int(seed),
                  min_seconds=float(min_seconds), max_seconds=float(max_seconds))
    state = _stored_state(out_dir, params)
    if state == "complete":
        logger.info("%s already holds this synthetic corpus; not regenerating it", out_dir)
        return read_metadata(out_dir)
    if state == "partial":
        logger.info("%s holds an unfinished synthetic corpus with these parameters; regenerating it", out_dir)
    os.makedirs(out_dir, exist_ok=True)
    _write_params(out_dir, params, complete=False)
    speakers = [make_speaker(seed, i) for i in range(num_speakers)]
    jobs = [(s, c, i) for s in range(num_speakers) for c in classes for i in range(utterances_per_class)]
    rows = []
    for s, label, i in tqdm(jobs, desc="synthetic corpus", unit="utt", disable=not progress):
        # one generator per utterance, keyed by what identifies it, not by loop order
        rng = np.random.default_rng([seed, 1, s, ALL_CLASSES.index(label), i])
        spk = speakers[s]
        wav, info = synthesize(rng, spk, label, rng.uniform(min_seconds, max_seconds))
        rel = f"{label}/{spk['id']}_{label}_{i + 1:03d}.wav"
        with atomic_path(os.path.join(out_dir, rel)) as tmp:
            sf.write(tmp, np.round(wav * 32767).astype(np.int16), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        row = dict(file=rel, speaker=spk["id"], sex=spk["sex"], label=label,
                   seconds=wav.size / SAMPLE_RATE, **info)
        rows.append({k: _cell(k, row[k]) for k in COLUMNS})
    with atomic_open(os.path.join(out_dir, METADATA_FILE), "w", encoding="utf-8") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for row in rows:
            f.write("\t".join(str(row[k]) for k in COLUMNS) + "\n")
    _write_params(out_dir, params, complete=True, count=len(rows))  # last: marks the corpus complete
    minutes = sum(r["seconds"] for r in rows) / 60
    logger.info("wrote %d utterances (%.1f min) to %s", len(rows), minutes, out_dir)
    for row in rows:
        row["path"] = os.path.abspath(os.path.join(out_dir, row["file"]))
    return rows


_DECIMALS = dict(seconds=4, mean_f0=1, f0_range_st=2, rate=2, intensity_db=2, tilt_db_oct=2, jitter=4,
                 shimmer=4, breathiness=4, gain_db=2, formant_scale=3)


def _cell(key, value):
    """A metadata value rounded as it is written, so fresh and re-read rows compare equal."""
    return float(f"{float(value):.{_DECIMALS[key]}f}") if key in _DECIMALS else value
