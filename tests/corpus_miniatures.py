"""Faithful miniatures of the corpora the preparers read: real layouts, file-name codes and label files.

Each builder writes a small tree (tiny tone WAVs of 0.3 s) under ``root`` and
returns the folder to pass to ``fairseq-ser prepare <corpus>``. Besides the
speech, each holds what a real copy holds that is not labelled speech:
readme and table files, hidden macOS files, song or video files, an empty
wav, unlabelled partitions. The numbers the tests expect follow from the
loops below; each builder's docstring gives them.
"""

import csv
import json
import os

import numpy as np
import soundfile as sf

SECONDS = 0.3


def tone(path, rate=16000, channels=1, seconds=SECONDS, freq=220.0):
    t = np.arange(int(round(seconds * rate))) / rate
    wav = 0.3 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        wav = np.stack([wav] * channels, axis=1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, wav.astype(np.float32), rate, subtype="PCM_16")
    return path


def text(path, content="", mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(content)
    return path


# --- RAVDESS --------------------------------------------------------------------

RAVDESS_STRONG = ("03", "04", "05")   # happy, sad, angry also at strong intensity


def ravdess(root):
    """24 actors x (8 emotions at normal intensity + happy, sad, angry strong) = 264 speech files.

    Per class: neu cal fea dis sur 24 each, hap sad ang 48 each; 192 normal,
    72 strong. Actor_01 is stereo. 48 kHz throughout, so all 264 are
    converted. Excluded (5): a full-AV wav, two song files, a file in the
    wrong actor folder, an emotion code 09. Passed over: an mp4, an
    AppleDouble ``._`` file, ``.DS_Store`` files.
    """
    base = os.path.join(root, "Audio_Speech_Actors_01-24")
    for actor in range(1, 25):
        folder = os.path.join(base, f"Actor_{actor:02d}")
        channels = 2 if actor == 1 else 1
        for emotion in range(1, 9):
            tone(os.path.join(folder, f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav"), 48000, channels)
        for emotion in RAVDESS_STRONG:
            tone(os.path.join(folder, f"03-01-{emotion}-02-02-02-{actor:02d}.wav"), 48000, channels)
    tone(os.path.join(base, "Actor_02", "01-01-05-01-01-01-02.wav"), 48000)
    text(os.path.join(base, "Actor_02", "01-01-05-01-01-01-02.mp4"), b"\x00\x00\x00\x18ftypmp42", "wb")
    tone(os.path.join(base, "Actor_03", "03-02-03-01-01-01-03.wav"), 48000)
    tone(os.path.join(base, "Actor_03", "03-02-04-02-01-02-03.wav"), 48000)
    tone(os.path.join(base, "Actor_08", "03-01-01-01-01-02-07.wav"), 48000)
    tone(os.path.join(base, "Actor_09", "03-01-09-01-01-01-09.wav"), 48000)
    text(os.path.join(base, "Actor_04", "._03-01-01-01-01-01-04.wav"), b"\x00\x05\x16\x07Mac OS X", "wb")
    text(os.path.join(base, ".DS_Store"), b"\x00\x00\x00\x01Bud1", "wb")
    text(os.path.join(base, "Actor_05", ".DS_Store"), b"\x00\x00\x00\x01Bud1", "wb")
    return base


# --- CREMA-D --------------------------------------------------------------------

CREMAD_ACTORS = range(1001, 1011)
CREMAD_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
SUMMARY_HEADER = ["", "FileName", "VoiceVote", "VoiceLevel", "FaceVote", "FaceLevel",
                  "MultiModalVote", "MultiModalLevel"]
# (stem -> VoiceVote) where raters heard something else than the acted emotion
CREMAD_VOTES = {**{f"1002_IEO_{e}_HI": "N" for e in ("ANG", "DIS", "FEA", "HAP", "SAD")},
                "1003_DFA_ANG_XX": "A:N", "1004_DFA_FEA_XX": "F:S"}
CREMAD_NO_ROW = "1005_DFA_SAD_XX"


def cremad(root):
    """10 actors x 12 files (DFA x 6 emotions, IEO_HI x 5, IEO_NEU_XX) = 120 clips, 20 per class.

    Also the empty 1076_MTI_SAD_XX.wav and a misnamed copy (both excluded),
    README.md, AudioMP3/, VideoDemographics.csv, finishedResponses.csv and
    processedResults/summaryTable.csv in R's write.csv format. Voted labels:
    1002's five IEO_HI clips heard as neutral, two ties, one clip without a
    row: 117 kept (ang 18, dis 19, fea 18, hap 19, neu 25, sad 18).
    """
    base = os.path.join(root, "CREMA-D")
    audio = os.path.join(base, "AudioWAV")
    stems = []
    for actor in CREMAD_ACTORS:
        for emotion in CREMAD_EMOTIONS:
            stems.append(f"{actor}_DFA_{emotion}_XX")
            stems.append(f"{actor}_IEO_{emotion}_{'XX' if emotion == 'NEU' else 'HI'}")
    for i, stem in enumerate(stems):
        tone(os.path.join(audio, stem + ".wav"), freq=200 + i)
    text(os.path.join(audio, "1076_MTI_SAD_XX.wav"), b"", "wb")
    tone(os.path.join(audio, "1001_DFA_ANG_XX (copy).wav"))
    text(os.path.join(audio, ".DS_Store"), b"\x00\x00\x00\x01Bud1", "wb")
    text(os.path.join(base, "AudioMP3", "1001_DFA_ANG_XX.mp3"), b"ID3\x03\x00", "wb")
    text(os.path.join(base, "README.md"), "# CREMA-D\n")
    text(os.path.join(base, "VideoDemographics.csv"),
         "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n")
    text(os.path.join(base, "finishedResponses.csv"),
         '"","localid","pos","ans","ttr","queryType","numTries","clipNum","questNum","subType","clipName",'
         '"sessionNums","respEmo","respLevel","dispEmo","dispVal","dispLevel"\n')
    rows = [s for s in stems + ["1076_MTI_SAD_XX"] if s != CREMAD_NO_ROW]
    with open(text(os.path.join(base, "processedResults", "summaryTable.csv")), "w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(SUMMARY_HEADER)
        for i, stem in enumerate(rows, start=1):
            vote = CREMAD_VOTES.get(stem, stem.split("_")[2][0])
            level = ":".join(["50"] * len(vote.split(":"))) if ":" in vote else 60
            writer.writerow([str(i), stem, vote, level, vote, 70, vote, 65])
    text(os.path.join(base, "processedResults", "tabulatedVotes.csv"), '"","A","D","F","H","N","S"\n')
    return base


# --- MSP-Podcast ------------------------------------------------------------------

MSP_COLUMNS = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
# EmoClass letters per partition; O and X are no class of the 8-class protocol
MSP_PARTITIONS = {
    "Train": "AASSHHUFDCNNNNOX",
    "Development": "ASHUFDCNX",
    "Test1": "ASHUFDCNNO",
    "Test2": "AHNS",
    "Test3": "  ",
}
MSP_MISSING_AUDIO = "MSP-PODCAST_9999_0001.wav"
MSP_UNLABELLED = "MSP-PODCAST_0500_0001.wav"


def msp_rows():
    rows, n = [], 0
    for partition, codes in MSP_PARTITIONS.items():
        for code in codes:
            n += 1
            hidden = code == " "
            rows.append({"FileName": f"MSP-PODCAST_{n:04d}_{n % 7 + 1:04d}.wav", "EmoClass": code.strip(),
                         "EmoAct": "" if hidden else 3.5 + n % 3, "EmoVal": "" if hidden else 4.0,
                         "EmoDom": "" if hidden else 4.2, "SpkrID": "Unknown" if n % 4 == 0 else str(100 + n % 5),
                         "Gender": "Unknown" if n % 4 == 0 else ("Female" if n % 2 else "Male"),
                         "Split_Set": partition})
    rows.append({"FileName": MSP_MISSING_AUDIO, "EmoClass": "N", "EmoAct": 4.0, "EmoVal": 4.0, "EmoDom": 4.0,
                 "SpkrID": "7", "Gender": "Male", "Split_Set": "Train"})
    return rows


def msp_podcast(root, label_file="labels_consensus.csv", rows=None):
    """Train 16 rows (14 of the 8 classes, O, X) + a row whose wav is missing, Development 9 (8 + X),
    Test1 10 (9 + O), Test2 4, Test3 2 with hidden labels; one wav without a row.

    Per split (8 classes): train 14 (ang 2 sad 2 hap 2 sur 1 fea 1 dis 1 con 1
    neu 4), valid 8, test 9 (neu 2), test2 4; dropped oth 2, xxx 2; excluded 1.
    ``label_file`` picks the CSV, the misspelt CSV or the JSON form.
    """
    base = os.path.join(root, "MSP-PODCAST-Publish-1.12")
    rows = msp_rows() if rows is None else rows
    for i, row in enumerate(rows):
        if row["FileName"] != MSP_MISSING_AUDIO:
            tone(os.path.join(base, "Audios", row["FileName"]), freq=180 + 3 * i)
    tone(os.path.join(base, "Audios", MSP_UNLABELLED))
    text(os.path.join(base, "Audios", ".DS_Store"), b"\x00\x00\x00\x01Bud1", "wb")
    text(os.path.join(base, "Transcripts", rows[0]["FileName"][:-4] + ".txt"), "you know what i mean\n")
    text(os.path.join(base, "Partitions.txt"), "".join(f"{r['Split_Set']}; {r['FileName']}\n" for r in rows))
    text(os.path.join(base, "Labels", "labels_detailed.csv"), "FileName,Annotator,EmoClass\n")
    path = os.path.join(base, "Labels", label_file)
    if label_file.endswith(".json"):
        data = {r["FileName"]: {k: v for k, v in r.items() if k != "FileName"} for r in rows}
        text(path, json.dumps(data, indent=1))
    else:
        with open(text(path), "w", newline="") as f:
            writer = csv.DictWriter(f, MSP_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return base


# --- ESD --------------------------------------------------------------------------

ESD_SPEAKERS = ("0001", "0002", "0003", "0011", "0012", "0013")
ESD_EMOTIONS = {"Neutral": (0, "中立"), "Angry": (350, "生气"), "Happy": (700, "快乐"),
                "Sad": (1050, "伤心"), "Surprise": (1400, "惊喜")}
# number within an emotion's 350 -> official subfolder
ESD_FILES = {1: "train", 2: "train", 301: "evaluation", 321: "test"}


def esd(root, official=True):
    """6 speakers (3 Mandarin, 3 English) x 5 emotions x 4 files (train 2, evaluation 1, test 1) = 120.

    ``official=False`` puts the same files directly into the emotion folders.
    Also: per-speaker transcripts ``<spk>/<spk>.txt``, a readme, hidden
    files, and one file of speaker 0012 inside 0011's Happy folder (excluded).
    """
    base = os.path.join(root, "Emotion Speech Dataset")
    for speaker in ESD_SPEAKERS:
        lines = []
        for emotion, (offset, chinese) in ESD_EMOTIONS.items():
            for number, split in ESD_FILES.items():
                name = f"{speaker}_{offset + number:06d}"
                folder = os.path.join(base, speaker, emotion, split if official else "")
                tone(os.path.join(folder, name + ".wav"), freq=150 + number % 50)
                label = chinese if int(speaker) <= 10 else emotion
                lines.append(f"{name}\t{'打开灯' if int(speaker) <= 10 else 'The nine the eggs, I keep.'}\t{label}\n")
        text(os.path.join(base, speaker, f"{speaker}.txt"), "".join(lines))
    stray = os.path.join(base, "0011", "Happy", "train" if official else "", "0012_000703.wav")
    tone(stray)
    text(os.path.join(base, "readme.txt"), "Emotional Speech Dataset (ESD)\n")
    text(os.path.join(base, "0001", ".DS_Store"), b"\x00\x00\x00\x01Bud1", "wb")
    return base


# --- SAVEE ------------------------------------------------------------------------

SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
SAVEE_FILES = {"a": 2, "d": 2, "f": 2, "h": 2, "n": 4, "sa": 2, "su": 2}


def savee(root, flat=False):
    """4 speakers x 16 files (2 per emotion, 4 neutral) = 64, 44.1 kHz (all converted).

    Nested (``AudioData/<spk>/<code><nn>.wav``, with ``Info.txt`` and one
    misnamed file, excluded) or ``flat`` (``ALL/<spk>_<code><nn>.wav``).
    """
    base = os.path.join(root, "SAVEE")
    for speaker in SAVEE_SPEAKERS:
        for code, n in SAVEE_FILES.items():
            for k in range(1, n + 1):
                name = f"{speaker}_{code}{k:02d}.wav" if flat else f"{code}{k:02d}.wav"
                folder = os.path.join(base, "ALL") if flat else os.path.join(base, "AudioData", speaker)
                tone(os.path.join(folder, name), 44100)
    if flat:
        return os.path.join(base, "ALL")
    text(os.path.join(base, "AudioData", "Info.txt"), "SAVEE database: 4 speakers, 7 emotions\n")
    tone(os.path.join(base, "AudioData", "JK", "x01.wav"), 44100)
    text(os.path.join(base, "AudioData", "DC", ".DS_Store"), b"\x00\x00\x00\x01Bud1", "wb")
    return base
