"""The face: the `adapt` command line (`app`), its commands and the demo pipeline."""
