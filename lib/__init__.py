"""Training pipeline for Vietnamese-English code-switched speech. The notebooks call these modules."""
