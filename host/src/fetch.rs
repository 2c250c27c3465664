//! Resumable, checksum-verified downloads of dataset and model files.
