"""Data: labelled text sets, synthetic multimodal sets, featurisation of a data set."""
