"""dasv.dsp: the paper's log-mel recipe and feature normalisation."""
