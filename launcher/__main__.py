"""``python -m launcher`` (what ``make run`` runs): the whole lab on this machine."""

from launcher.lab import main

main()
