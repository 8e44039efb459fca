"""One module per `adapt` subcommand; each is a thin layer over the library."""
