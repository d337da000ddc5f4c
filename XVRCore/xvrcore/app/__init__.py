"""The applications on top of the library: the command line, the demo, the accuracy harness and job running."""
