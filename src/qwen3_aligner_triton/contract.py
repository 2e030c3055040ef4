"""The names and constants the project shares, declared once.

Model names, the tensors of both models with their data types, the audio constants and the drain
marker: the models, their configuration checks, the launcher, the tools and the tests import them
from here. The client distribution keeps its own copy (it needs none of the server), which a test
holds equal to this one.
"""

from __future__ import annotations

MODEL_NAME = "qwen3_aligner"  # the public model (the front)
CORE_MODEL_NAME = "qwen3_aligner_core"  # the forward it calls
ASR_MODEL_NAME = "qwen3_asr"  # the ASR model it calls for requests without TEXT (off unless asked)
DRAIN_MARKER = "STOPPING"  # in the public model's folder while a stop drains the front

MODEL_SAMPLE_RATE = 16000  # Hz, the rate the feature extractor expects
HOP_SAMPLES = 160  # samples per log-mel frame at 16 kHz
MEL_FRAME_MS = 1000.0 * HOP_SAMPLES / MODEL_SAMPLE_RATE  # 10 ms
MEL_BINS = 128  # log-mel bins of every clip

# The public model's tensors (name -> config.pbtxt data type). A request carries exactly one of
# AUDIO (a waveform) and AUDIO_FILE (the bytes of an audio file); SEGMENTS is optional.
FRONT_INPUTS = {
    "AUDIO": "TYPE_FP32",
    "AUDIO_FILE": "TYPE_STRING",
    "SAMPLE_RATE": "TYPE_INT32",
    "TEXT": "TYPE_STRING",
    "LANGUAGE": "TYPE_STRING",
    "SEGMENTS": "TYPE_STRING",
}
FRONT_REQUIRED_INPUTS = ("AUDIO", "SAMPLE_RATE", "TEXT", "LANGUAGE")  # declared by every config
# Either may be left out of a request, so a config that declares AUDIO_FILE declares both optional.
FRONT_ALTERNATIVE_INPUTS = ("AUDIO", "AUDIO_FILE")
FRONT_OUTPUTS = {
    "WORDS": "TYPE_STRING",
    "START_TIMES": "TYPE_FP32",
    "END_TIMES": "TYPE_FP32",
    "ALIGNMENT": "TYPE_STRING",
    "SCORES": "TYPE_FP32",
}
FRONT_MIN_MAX_BATCH_SIZE = 16
# With the ASR model: CONTEXT (upstream's context) is optional; a transcribed request's answer
# also carries its transcript and language. TEXT and LANGUAGE are declared optional: the front
# says what a request without them needs.
FRONT_ASR_INPUTS = {"CONTEXT": "TYPE_STRING"}
FRONT_ASR_OUTPUTS = {"TRANSCRIPT": "TYPE_STRING", "TRANSCRIPT_LANGUAGE": "TYPE_STRING"}

# The core's tensors: prompt ids and either the clip's log-mel FEATURES or its 16 kHz AUDIO.
CORE_INPUTS = {"INPUT_IDS": "TYPE_INT64", "FEATURES": "TYPE_FP32", "AUDIO": "TYPE_FP32"}
CORE_OUTPUTS = {"TIMESTAMP_BINS": "TYPE_INT32", "SLOT_CONFIDENCE": "TYPE_FP32"}
CORE_MIN_MAX_BATCH_SIZE = 1

# The ASR model's tensors: per batch row one chunk of one request (AUDIO zero-padded to the
# longest row, AUDIO_LENGTH its own samples), its context and forced language ("" detects); per
# row the parsed transcript and language. One request is one generate call.
ASR_INPUTS = {
    "AUDIO": "TYPE_FP32",
    "AUDIO_LENGTH": "TYPE_INT32",
    "CONTEXT": "TYPE_STRING",
    "LANGUAGE": "TYPE_STRING",
}
ASR_OUTPUTS = {"TRANSCRIPT": "TYPE_STRING", "TRANSCRIPT_LANGUAGE": "TYPE_STRING"}
ASR_MIN_MAX_BATCH_SIZE = 32  # upstream's max_inference_batch_size: chunks in one call
