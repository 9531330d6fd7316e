"""Corpus layouts -> dasv lists: VoxCeleb trees, Kaldi data dirs, trial lists drawn from labels."""
