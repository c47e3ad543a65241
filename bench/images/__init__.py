"""Images as the models see them: CIR preprocessing (TargetPad) and the cached,
preprocessed pixel arrays of an image list."""
