"""Examples of tidings in use; each folder is one, runnable from the repository's root."""
