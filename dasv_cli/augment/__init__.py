"""Waveform augmentation (reverb, noise, music, babble, speed) and room impulse response simulation.

keys (derived keys and speaker classes), plan (seeded per-key choices), sources (MUSAN and RIRS_NOISES
layouts), mix / reverb / babble / speed (the operations), augmenter (the engine features calls),
rirs and rirset (`dasv rirs`: image-method rooms written as a RIRS_NOISES-like tree).
"""
