"""Starting the lab's real parts as processes and keeping them up: ``make run``
(:mod:`launcher.lab`), and the process helpers the tests and benchmarks share
(:mod:`launcher.processes`)."""
