"""wav2vec 2.0's frame rule, the one place it is written.

Every released wav2vec 2.0 CNN encoder has a 400-sample (25 ms) receptive
field and a 320-sample (20 ms) stride: a 16 kHz waveform of ``n`` samples
gives ``floor((n - 400) / 320) + 1`` frames at 50 Hz, and none when it is
shorter than 400 samples. Frame labels (``{split}.km{K}``), the P-TAPT
targets, the stage-1 wav2vec 1.0 features and the dumped clustering features
all follow this rule.
"""

RECEPTIVE_FIELD = 400  # samples seen by one frame
STRIDE = 320  # samples between two frames
FRAME_RATE = 50  # frames per second at 16 kHz


def num_frames(num_samples: int) -> int:
    """Frames the wav2vec 2.0 CNN makes of ``num_samples`` samples (0 below the receptive field)."""
    return max(0, (int(num_samples) - RECEPTIVE_FIELD) // STRIDE + 1)


RULE = f"{RECEPTIVE_FIELD}-sample receptive field, {STRIDE}-sample stride"
